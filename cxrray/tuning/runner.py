"""Run a list of trial specs on Ray Tune, each trial a Ray Train fit.

Ray 2.60 runs Train V2, where ``Tuner(TorchTrainer(...))`` is refused; the
working pattern (``launch_trials``) is a Tune *function* trainable that builds
a ``TorchTrainer`` and calls ``fit()``, forwarding metrics with
``TuneReportCallback``. That choice lives in this one module.

A trial is finished when its ``TrialDir.predictions`` exists, so re-running a sweep
(after a crash, or with more cells) runs only what is missing. The driver hands each
trial a ``TrialContext`` (spec, data, where to write, how to log); every path comes
from the run's ``RunLayout``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cxrray.config import DataRef, RunLayout, SweepOutcome, TrialContext, TrialSpec, WandbMode
from cxrray.training.methods import check_methods
from cxrray.training.outputs import FAULT_ENV
from cxrray.tuning.asha import EarlyStop, cell_scheduler, experiments, mark_stopped
from cxrray.tuning.gather import collect
from cxrray.tuning.prepare import PreparedData
from cxrray.tuning.progress import progress_callback, spec_of, trial_context, trial_dirname
from cxrray.tuning.storage import StorageError, StorageGuard, set_aside_damaged, stopped_message, storage_stops
from cxrray.tuning.study import Resources, SweepOptions, check_size, check_specs
from cxrray.wandb_run import QUIET_ENV

__all__ = ["SweepOutcome", "collect", "launch_trials", "run_sweep", "run_waves", "start_ray"]


def trial_datasets(data: DataRef, inline: bool, pin_memory: bool = False) -> dict[str, Any]:
    """The trial's splits. Inline: ``LocalSplit``, read in the trial's own process file by file with a reader
    thread ahead (no Ray task that training could starve, no per-epoch start-up, nothing materialised). A Ray
    Train fit: Ray Datasets (read_parquet -> decode) that Ray Train splits between the workers
    (``streaming_split``), decoded once and kept in the object store when the split is small
    (``shards.train_split``: no per-epoch start-up), streamed every epoch when it is large (memory flat); their
    tasks run on the CPUs the trial reserved for them (``Resources.data_cpus``, its placement group's last
    bundle). ``pin_memory`` (an inline trial on CUDA): batches arrive in page-locked memory, copied to the GPU
    asynchronously."""
    if inline:
        from cxrray.data.shards import LocalSplit

        return {s: LocalSplit(Path(data.shard_dir) / s, stored_pixels=True, pin_memory=pin_memory)
                for s in data.splits}
    import ray.data
    from ray.util import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from cxrray.data.shards import train_split

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    pg = get_current_placement_group()
    if pg is not None and pg.bundle_count > 1:  # Ray Data's own strategy (SPREAD) would leave the trial's bundle
        ctx.scheduling_strategy = ctx.scheduling_strategy_large_args = PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=pg.bundle_count - 1)
    return {s: train_split(Path(data.shard_dir) / s) for s in data.splits}


def _trial_fn(config: dict[str, Any]) -> None:
    """Tune function trainable: one trial context, trained inline or as one Ray Train fit."""
    from cxrray.training.session import InlineSession
    from cxrray.training.worker import run_trial, train_loop_per_worker

    ctx, res = TrialContext.from_dict(trial_context(config["trial"])), Resources(**config["resources"])
    datasets = trial_datasets(ctx.data, res.inline(), pin_memory=res.inline() and res.use_gpu and PIN_MEMORY)
    if res.inline():
        run_trial(ctx, InlineSession(datasets, ctx.trial_dir.resume, res.use_gpu))
        return
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=ctx.to_dict(),
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker}),
        run_config=RunConfig(name=ctx.spec.trial_id, storage_path=f"{ctx.storage}/train",
                             callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # (Ray types it apart)
                             failure_config=FailureConfig(max_failures=res.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    trainer.fit()


def trial_resources(resources: Resources):
    """What Tune reserves per trial, as one placement group. Inline, the trial actor trains and reads its shards
    itself (``LocalSplit``): one bundle with the worker's CPUs (and GPU). A Ray Train fit's worker group
    reserves its own, so the trial actor holds next to nothing, plus a bundle of ``data_cpus`` where the Ray
    Data tasks that stream its shards are scheduled (``trial_datasets``): its readers always have CPUs, and on
    a small machine trials wait for each other instead of starving their readers (which would hang)."""
    from ray import tune

    if resources.inline():
        return tune.PlacementGroupFactory([{"CPU": resources.cpus_per_worker, "GPU": int(resources.use_gpu)}])
    return tune.PlacementGroupFactory([{"CPU": 0.01}] + ([{"CPU": resources.data_cpus}] if resources.data_cpus > 0
                                                         else []))


def launch_trials(contexts: list[TrialContext], resources: Resources, total: int,
                  early_stop: EarlyStop | None = None) -> None:
    """Run the trial contexts as Tune experiments of at most ``EXPERIMENT_TRIALS`` trials, one after another
    (``asha.experiments``: the driver's memory stays flat in trials); the only place that touches Tune."""
    if early_stop is not None and not resources.inline():
        raise ValueError("ASHA early stopping needs one-worker inline trials (--launcher auto/inline): a Ray "
                         "Train fit running inside a Tune trial cannot be stopped between epochs")
    layout = contexts[0].layout
    guard = StorageGuard(layout.root)  # --out full or read-only: stop every trial, end in one line
    progress = progress_callback(total, total - len(contexts), layout)
    parts = experiments([c.spec for c in contexts], EXPERIMENT_TRIALS, early_stop)
    for k, part in enumerate(parts, start=1):
        if len(parts) > 1:
            print(f"[cxrray] Tune experiment {k}/{len(parts)}: {len(part)} trial(s)", flush=True)
        experiment([contexts[i] for i in part], resources, guard, progress, early_stop)
        if guard.check(force=True):
            break
    problem = guard.check(force=True)
    if problem:
        specs = [c.spec for c in contexts]
        finished = sum(layout.trial(s.trial_id).finished for s in specs) + total - len(specs)
        raise StorageError(stopped_message(layout.root, problem, finished, total))


def experiment(contexts: list[TrialContext], resources: Resources, guard: StorageGuard, progress: Any,
               early_stop: EarlyStop | None) -> None:
    """One Tune experiment over ``contexts`` (named ``tune`` under the storage path, like every other, so that a
    trial's checkpoints are found again on resume), with the sweep's progress callback."""
    from ray import tune

    specs, layout = [c.spec for c in contexts], contexts[0].layout
    scheduler = None
    if early_stop is not None:
        scheduler = cell_scheduler(specs, early_stop, spec_of, lambda spec, result: mark_stopped(
            layout.trial(spec.trial_id), spec, result))
    tuner = tune.Tuner(
        tune.with_resources(_trial_fn, trial_resources(resources)),
        param_space={"trial": tune.grid_search([json.dumps(c.to_dict(), sort_keys=True) for c in contexts]),
                     "resources": resources.__dict__},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials, scheduler=scheduler,
                                    trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=contexts[0].storage, stop=guard.stopper(),
                                  callbacks=[progress], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=resources.max_failures)),
    )
    try:
        with guard, sigint_kept():
            tuner.fit()
    except Exception:
        if not guard.check(force=True):
            raise  # not the storage: a bug, with its traceback


def run_sweep(specs: list[TrialSpec], *, run_dir: str | Path, data: PreparedData | Mapping[str, PreparedData],
              options: SweepOptions = SweepOptions()) -> SweepOutcome:
    """Run every unfinished spec, then gather predictions and results from the trial folders.

    ``data``: the prepared dataset, or one per ``data_id`` when the specs read several
    (the phases of staged pretraining). ``options`` (``SweepOptions``): resources; W&B's mode and project; a
    local ImageNet state-dict file for specs with ``pretrained`` (recorded as ``init=file:<name>``); where Ray
    keeps checkpoints (default ``<run_dir>/ray``; on a multi-node cluster a shared path (NFS) or a cloud URI
    that every node can reach); ASHA over the hyper-parameter axes, one bracket per protocol cell (protocol cells
    always finish); the most trials (the study checked its axes' product before Ray started; this is the exact
    count).
    """
    resources, early_stop = options.resources, options.early_stop
    check_size(len(specs), options.max_trials)
    layout = RunLayout(Path(run_dir).resolve())
    if len({s.trial_id for s in specs}) != len(specs):
        raise ValueError("two specs in the sweep are identical (same trial id)")
    by_id = {data.data_id: data} if isinstance(data, PreparedData) else dict(data)
    unknown = sorted({s.data_id for s in specs} - set(by_id))
    if unknown:
        raise ValueError(f"specs read data {unknown} that was not prepared (prepared: {sorted(by_id)})")
    check_specs(specs)
    check_methods(specs, resources.num_workers, early_stop is not None)
    for s in specs:
        set_aside_damaged(layout.trial(s.trial_id), s.run_name)
    skipped = [s.trial_id for s in specs if layout.trial(s.trial_id).finished]
    todo = [s for s in specs if not layout.trial(s.trial_id).finished]
    print(f"[cxrray] {len(specs)} trials: {len(skipped)} already finished, {len(todo)} to run", flush=True)
    if todo:
        refs = {k: d.ref() for k, d in by_id.items()}
        contexts = [TrialContext(spec=s, run_dir=str(layout.root), data=refs[s.data_id],
                                 storage=options.storage or str(layout.ray), wandb=options.wandb_mode,
                                 project=options.project,
                                 weights=str(Path(options.weights).resolve()) if options.weights else None,
                                 checkpoint_every_s=resources.checkpoint_every_s, use_gpu=resources.use_gpu)
                    for s in todo]
        with storage_stops(layout, specs):
            launch_trials(contexts, resources, len(specs), early_stop)
    with storage_stops(layout, specs):
        return collect(specs, layout.root, skipped)


def run_waves(waves: list[list[TrialSpec]], *, run_dir: str | Path, data: Mapping[str, PreparedData],
              options: SweepOptions = SweepOptions()) -> SweepOutcome:
    """Run dependent waves in order (staged pretraining): wave k+1 starts from checkpoints of wave k.

    A spec whose upstream stage did not finish is not started; it is reported as failed
    (``blocked by <id>``) while every independent cell still runs. ``run_dir``, ``data``, ``options``: as
    ``run_sweep``'s.
    """
    layout = RunLayout(Path(run_dir).resolve())
    check_size(sum(map(len, waves)), options.max_trials)
    done_before = [s.trial_id for w in waves for s in w if layout.trial(s.trial_id).finished]
    for k, wave in enumerate(waves):
        ready = [s for s in wave if not s.init_from or layout.trial(s.init_from).done]
        for s in wave:
            if s not in ready:
                print(f"[cxrray] {s.run_name} ({s.trial_id}) blocked: its pretraining stage {s.init_from} "
                      f"did not finish", flush=True)
        if ready:
            print(f"[cxrray] wave {k + 1}/{len(waves)}: {len(ready)} trial(s)", flush=True)
            run_sweep(ready, run_dir=run_dir, data=data, options=options)
    return collect([s for w in waves for s in w], layout.root, done_before)


# Tune's console output a cxrray user cannot act on: its configuration box, a TensorBoard hint (to a program that
# is not installed, for a folder outside --out) and "on_step_begin took 0.6 s" timings; cxrray prints a line per
# trial start, epoch and end instead. RAY_AIR_NEW_OUTPUT=0 with verbose=0 is Tune's silent reporter.
QUIET = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_THRESHOLD_S": "30"}
# An inline CUDA trial's batches in page-locked memory, copied asynchronously (``LocalSplit(pin_memory=True)``);
# CXRRAY_PIN_MEMORY=0 turns it off (``bench/gpu.py`` measures both).
PIN_MEMORY = os.environ.get("CXRRAY_PIN_MEMORY", "1") != "0"
# The most trials in one Tune experiment (``asha.experiments``); CXRRAY_EXPERIMENT_TRIALS sets it.
EXPERIMENT_TRIALS = int(os.environ.get("CXRRAY_EXPERIMENT_TRIALS", "1000"))
WANDB_PASSED = ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL")  # driver -> workers


def worker_env(run_dir: Path, wandb_mode: WandbMode) -> dict[str, str]:
    """The environment every Ray worker gets: W&B's mode, quiet and its temp files under ``--out``; the
    driver's W&B credentials, entity and project (``--wandb online`` from the workers of a cluster); the
    reliability tests' fault plan."""
    tmp = RunLayout(Path(run_dir)).tmp
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"WANDB_MODE": wandb_mode, "TMPDIR": str(tmp)} | QUIET_ENV
    env |= {k: v for k, v in os.environ.items() if k == FAULT_ENV}  # reliability tests only
    return env | {k: v for k, v in os.environ.items() if k in WANDB_PASSED}


@contextmanager
def sigint_kept() -> Iterator[None]:
    """Around ``tuner.fit()``: Tune replaces the SIGINT (and SIGUSR1) handler for the fit, ends the fit quietly on
    a first Ctrl-C and puts the original back only then; after a fit that ended normally its handler stayed, so
    the first Ctrl-C of the analysis was swallowed. The handlers are restored after the fit, and a Ctrl-C that
    Tune caught ends the sweep as any Ctrl-C does (KeyboardInterrupt: one line, exit 130, resumable)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = [signal.SIGINT, *([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])]
    saved = {k: signal.getsignal(k) for k in kinds}
    tune_catches = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    try:
        yield
    finally:
        caught = tune_catches and signal.getsignal(signal.SIGINT) is saved[signal.SIGINT]  # Tune put it back
        for k, handler in saved.items():
            signal.signal(k, handler)
    if caught:
        raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the driver is, so the sweep stops as on Ctrl-C and ends in one line (exit 143)."""


def stop_on_sigterm() -> None:
    """SIGTERM stops the sweep like Ctrl-C: finished trials stay, the run resumes with the same command."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def _tune_stop_lines(record: logging.LogRecord) -> bool:
    """Drop Tune's lines on a stop signal ("Stop signal received ...", "Resume experiment with:
    Tuner.restore(...)"): wrong advice for a cxrray sweep, which resumes by running the same command."""
    text = record.getMessage()
    return not ("Stop signal received" in text or "Experiment has been interrupted" in text)


def start_ray(run_dir: Path, *, num_cpus: int | None = None, wandb_mode: WandbMode = "offline",
              address: str | None = None, verbose_workers: bool = False) -> None:
    """Start (or join) Ray with W&B's mode and temp files kept inside the run directory.

    The environment the workers need is set here, once, and passed to them explicitly (``runtime_env``);
    the driver's own environment is left as it is. Worker logs stay in Ray's session logs unless
    ``verbose_workers``; the driver prints one line per epoch and per finished trial instead.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local instance (read by ray.init); a cluster brings its own
    for name, value in QUIET.items():  # read when Tune is imported and run; a user's own setting wins
        os.environ.setdefault(name, value)
    env = worker_env(run_dir, wandb_mode)
    if ray.is_initialized():
        return
    # No address: a Ray instance of the sweep's own, whatever else runs here (ray.init() alone would join a
    # cluster it finds recorded on the machine). --num-cpus with --address is refused before this (Study.check).
    ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=verbose_workers, configure_logging=True,
             logging_level=logging.WARNING)
    stop_on_sigterm()  # after ray.init, whose native handler would dump a stack and abort (exit 134)
    import ray.data

    logging.getLogger("ray.tune.tune").addFilter(_tune_stop_lines)  # cxrray says how to resume, in one line
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per epoch is the progress view
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": we disabled them
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
