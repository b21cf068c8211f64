"""Where the model-based analysis runs: in this process, or as Ray tasks over the cluster that ran the trials.

Saliency (with its sanity checks) and the transfer matrix load saved models and push test images through them:
the costly part of an analysis at paper scale. Their work is cut into jobs (a trial's saliency; a batch of
models scored on one test split) that ``fan_out`` runs one after the other here (``Placement.workers`` 1, no Ray
needed), or as Ray tasks, one CPU each, or, for the transfer scoring with ``gpus``, one GPU each (in float32,
``Placement.precision``); where Ray is not installed, in a pool of processes on this machine instead. Results
come back in job order, so a table is the same however the jobs ran. The sweeps place the analysis on the Ray
instance their trials used (``Placement.of_cluster``); ``python -m cxrray.analysis --workers N [--gpus N]``
starts a local one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cxrray.declared import check_ranges, option

PLACE = "where the model-based steps run"  # their --help section

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class Placement:
    """Where the model-based jobs run: ``workers`` CPU jobs at once (1: here, in order); with ``gpus``, the
    transfer scoring runs one job per GPU instead (saliency stays on the CPUs)."""

    workers: int = option(1, "saliency and transfer jobs at once, as Ray tasks on a local Ray instance of this "
                          "many CPUs (1: in this process, no Ray)", lo=1, hi=100_000, unit="workers", group=PLACE)
    gpus: int = option(0, "GPUs that score the transfer matrix, one job each (saliency stays on the CPUs)", lo=0,
                       hi=1024, unit="GPUs", group=PLACE)

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def device(self) -> str:
        """The torch device a scoring job uses."""
        return "cuda" if self.gpus else "cpu"

    @property
    def precision(self) -> str:
        """Transfer scoring's arithmetic: float32, on a GPU too. Measured on an H200 (``bench/gpu.py``), bf16
        autocast scored only 1.0-1.3x faster (the scoring is bound by reading the split) and moved a barely
        trained model's AUROC by 0.019 (efficientnet_b1, near-tied scores): not worth a changed number."""
        return "fp32"

    @property
    def scorers(self) -> int:
        """Transfer scoring jobs at once: one per GPU, else one per CPU worker."""
        return self.gpus or self.workers

    @classmethod
    def of_cluster(cls, gpu: bool = False) -> Placement:
        """One job per CPU (and scoring per GPU, with ``gpu``) of the running Ray instance; here without one."""
        import ray

        if not ray.is_initialized():
            return cls(1, int(gpu))
        resources = ray.cluster_resources()
        return cls(max(int(resources.get("CPU", 1)), 1), max(int(resources.get("GPU", 0)), 1) if gpu else 0)


def fan_out(fn: Callable[[J], R], jobs: Sequence[J], parallel: int = 1, gpu: bool = False) -> list[R]:
    """``fn`` over ``jobs``, results in job order: here when ``parallel`` is 1 or there is one job, else as Ray
    tasks (one CPU each, or one GPU each with ``gpu``; a local Ray instance of ``parallel`` CPUs is started when
    none is running)."""
    if parallel <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    import os

    try:
        import ray
    except ImportError:  # an analysis-only install (or a GPU machine) without Ray: processes on this machine
        return in_processes(fn, jobs, parallel, gpu)

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance, as the sweeps start it
        ray.init(num_cpus=parallel, include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray.remote(fn).options(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=0)
    return ray.get([task.remote(job) for job in jobs])


def _one_thread() -> None:
    """A pool worker's set-up: one BLAS/OpenMP thread, as a Ray task of one CPU has (``parallel`` workers at
    once would otherwise each start a thread per core)."""
    import os

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def in_processes(fn: Callable[[J], R], jobs: Sequence[J], parallel: int, gpu: bool = False) -> list[R]:
    """``fn`` over ``jobs`` in ``parallel`` fresh processes of this machine (spawned: no CUDA state or thread
    pool inherited), results in job order; GPU jobs run one at a time here (one device, no Ray to place them)."""
    if gpu:
        return [fn(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(parallel, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        return list(pool.map(fn, jobs))
