"""What every study command does between parsing and its sweep: choose the analysis, take the run folder, start
Ray. Imported by ``main`` after ``--help`` is answered (it loads the analysis stage)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cxrray.analysis.steps import AnalysisOptions, analysis_options
from cxrray.explain.fanout import Placement
from cxrray.tuning.cluster import check_fits, check_shared, cluster_view
from cxrray.tuning.options import Study
from cxrray.tuning.runner import start_ray


@dataclass(frozen=True)
class Begun:
    """A study under way: its run folder, the analysis chosen for its end, and when it began."""

    run_dir: Path
    analysis: AnalysisOptions
    t0: float
    argv: tuple[str, ...] | None  # the invocation, recorded in provenance.json once the input is checked


def begin(study: Study, argv: list[str] | None) -> Begun:
    """Before Ray starts: the analysis steps checked (a misspelt one fails here), the run folder made and its lock
    taken (``start`` writes ``study.yaml`` once the input is checked)."""
    chosen = analysis_options(study.analysis, AnalysisOptions(skip=study.skip,
                                                              placement=Placement(1, int(study.gpu))))
    study.claim()
    run_dir = study.out.resolve()
    return Begun(run_dir, chosen, time.time(), None if argv is None else tuple(argv))


def start(study: Study, begun: Begun) -> None:
    """Once the input is checked: ``study.yaml`` and the invocation's provenance written; then Ray started for the
    study (a local instance of its own; with ``--address``, join that cluster and say which in one line), with
    W&B's mode and temp files in the run folder; then check, before any data is read, that one trial's
    reservation fits what the cluster has or its autoscaler may add (else Tune would wait forever)."""
    run_dir = begun.run_dir
    study.record(None if begun.argv is None else list(begun.argv))
    start_ray(run_dir, num_cpus=study.num_cpus, wandb_mode=study.wandb_mode, address=study.address,
              verbose_workers=study.verbose)
    view = cluster_view(local=not study.address)
    if study.address:
        print(f"[cxrray] joined the Ray cluster at {view.address} (--address {study.address}): {view.describe()}",
              flush=True)
    check_fits(view, study.resources())
    if study.address:
        check_shared(run_dir, study.storage)
