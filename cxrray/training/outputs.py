"""What every finished trial leaves behind, whatever its training method.

``TrialDir.predictions`` (per-image probabilities for val and test, written atomically: its
existence marks the trial finished), ``TrialDir.meta`` (spec, selection, scores, training
seconds) and the weights. Written once, by the generic trial driver (``worker.run_trial``), for
every registered method, so the analysis reads one format; also what every epoch does whatever
the method (``EpochReporter``: W&B log, checkpoint cadence, report) and the fault-injection hook
of the reliability tests. No Ray.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import torch

from cxrray.config import TrialContext, TrialDir, TrialSpec
from cxrray.data.manifest import CARRIED_COLUMNS
from cxrray.data.tasks import TASKS, Task
from cxrray.models.card import ModelCard
from cxrray.records import TrialRecord
from cxrray.representations import out_channels
from cxrray.stats.interval import auroc_interval
from cxrray.training.session import Session
from cxrray.training.tracking import Tracker


def predictions_frame(pred: dict[str, np.ndarray], spec: TrialSpec, split: str) -> pl.DataFrame:
    """Per-image predictions as a table: ``prob_<class>`` per class; multilabel tasks add ``y_<finding>``
    (1, 0, NaN = unknown) and leave ``target`` at -1."""
    task = TASKS.get(spec.task)
    cols = {k: pred[k] for k in CARRIED_COLUMNS if k in pred}
    multilabel = pred["target"].ndim == 2
    cols["target"] = np.full(len(pred["row"]), -1) if multilabel else pred["target"]
    cols.update({f"prob_{c}": pred["prob"][:, i] for i, c in enumerate(task.classes)})
    if multilabel:
        cols.update({f"y_{c}": pred["target"][:, i] for i, c in enumerate(task.classes)})
    return pl.DataFrame(cols).with_columns(pl.lit(spec.trial_id).alias("trial_id"), pl.lit(split).alias("split"))


def split_frame(frames: list[pl.DataFrame], *splits: str) -> pl.DataFrame | None:
    """The predictions of the first of ``splits`` that the trial evaluated (found by its split, never by its
    place in the list)."""
    by = {f["split"][0]: f for f in frames if not f.is_empty()}
    return next((by[s] for s in splits if s in by), None)


def selected_summary(frames: list[pl.DataFrame], task: Task, record: TrialRecord) -> dict[str, Any]:
    """What the trial's W&B summary shows: the scores of the kept model (the epoch chosen on validation, not
    the last one), that epoch and its validation values, and the test AUROC of the task's positive class with
    its 95 % interval clustered by patient (NaN bounds where it cannot be estimated)."""
    out = dict(record.metrics) | {"selected_epoch": record.best_epoch}
    out |= {f"val_{k}": v for k, v in record.best_val.items()}
    test = split_frame(frames, "test")
    if test is None or task.multilabel or task.positive not in task.classes or test.is_empty():
        return out
    y, score = task.positive_scores(test)
    if y.all() or not y.any() or not np.isfinite(score).all():
        return out
    ci = auroc_interval(y, score, test["patient_id"].to_numpy())
    return out | {"test_auroc_positive": ci.auc, "test_auroc_ci_lo": ci.lo, "test_auroc_ci_hi": ci.hi,
                  "test_positive_class": task.positive}


def selection_key(val: dict[str, float], select_by: str) -> tuple[float, float]:
    """Larger is better: validation AUROC then lower loss, or lower loss alone; NaN ranks last."""
    fin = lambda x: x if x == x else float("-inf")  # noqa: E731  (NaN -> -inf)
    if select_by == "loss":
        return (fin(-val["loss"]), 0.0)
    if select_by == "auroc":
        return (fin(val["auroc"]), fin(-val["loss"]))
    raise ValueError(f"unknown select_by {select_by!r}; valid: auroc, loss")


def log_attempt(trial_dir: TrialDir, start_epoch: int, node: str = "") -> None:
    """Append one line per (re)start: the audit that shows a retried trial went on from its checkpoint, and on
    which Ray node."""
    trial_dir.path.mkdir(parents=True, exist_ok=True)
    with trial_dir.attempts.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} start_epoch={start_epoch} pid={os.getpid()} node={node}\n")


class EpochReporter:
    """One attempt of a trial, epoch by epoch: the attempts log line, the W&B run (rank 0), and per epoch
    the log, a checkpoint at most every ``checkpoint_every_s`` (always the first epoch of an attempt: a
    full state write costs 0.3 s for ResNet-18 here, and a resume loses at most that much work), the
    session report and the fault hook. As a context manager it closes the W&B run when a scheduler
    (ASHA) stops the trial at a report (``SystemExit``) or the attempt fails."""

    def __init__(self, ctx: TrialContext, session: Session, start: int, extra_config: dict[str, Any]) -> None:
        spec = ctx.spec
        self.session, self.spec, self.start, self.trial_dir = session, spec, start, ctx.trial_dir
        self.every_s, self.last_ckpt = ctx.checkpoint_every_s, float("-inf")
        self.tracker = None
        if session.rank == 0:
            log_attempt(self.trial_dir, start, getattr(session, "node_id", ""))
            self.tracker = Tracker(ctx.wandb, run_id=spec.trial_id, name=spec.run_name, project=ctx.project,
                                   group=spec.study, config=spec.flat() | extra_config, directory=self.trial_dir.path,
                                   step_file=self.trial_dir.wandb_step)
        self.fault = planned_fault(spec, self.trial_dir)  # read once per attempt, not every epoch

    def __enter__(self) -> EpochReporter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """A stopped (ASHA) or failed attempt closes its W&B run segment now, so the retry opens a new one."""
        if kind is not None and self.tracker is not None:
            self.tracker.finish(exit_code=0 if kind is SystemExit else 1)

    def __call__(self, epoch: int, metrics: dict[str, Any], state: Callable[[], dict[str, Any]]) -> None:
        """Log and report one finished epoch; ``state()`` builds the checkpoint only when one is due."""
        if self.tracker is not None:
            self.tracker.log(metrics, step=epoch)
        save = epoch == self.start or time.time() - self.last_ckpt >= self.every_s
        self.last_ckpt = time.time() if save else self.last_ckpt
        self.session.report(metrics, state() if self.session.rank == 0 and save else None)
        self.inject_fault()

    def inject_fault(self) -> None:
        """Reliability tests only: fail this attempt after a checkpointed epoch (or with no epoch left)."""
        if self.fault:
            raise RuntimeError(self.fault)


def write_outputs(trial_dir: TrialDir, spec: TrialSpec, frames: list[pl.DataFrame], scores: dict[str, float],
                  weights: dict[str, dict[str, Any]], meta: dict[str, Any], tracker: Tracker | None) -> None:
    """Weights files (name -> state dict), ``trial.json`` and (last, atomically) the predictions; logs them to
    the tracker."""
    tracker = tracker or Tracker("disabled", run_id="", name="", project="", group="", config={},
                                 directory=trial_dir.path)
    trial_dir.path.mkdir(parents=True, exist_ok=True)
    for name, state in weights.items():
        torch.save(state, trial_dir.file(name))
    if trial_dir.model.name in weights:  # what is needed to use the model again, beside it
        task = TASKS.get(spec.task)
        ModelCard.of(spec.trial_id, spec.backbone, spec.representation, spec.task, spec.image_size,
                     out_channels(spec.representation), task.num_outputs, task.multilabel,
                     spec.mask_dilation).write(trial_dir)
    record = TrialRecord.from_meta(spec, meta, scores, finished=time.time())
    record.write(trial_dir)
    tmp = trial_dir.path / f".{trial_dir.predictions.name}.tmp"
    pl.concat(frames).write_parquet(tmp)
    os.replace(tmp, trial_dir.predictions)  # the file's existence marks the trial finished
    tracker.summary(selected_summary(frames, TASKS.get(spec.task), record))  # after every history row
    tracker.artifact(trial_dir.predictions, f"predictions-{spec.trial_id}", "predictions")
    tracker.finish()


FAULT_ENV = "CXRRAY_FAULT_INJECT"


def planned_fault(spec: TrialSpec, trial_dir: TrialDir) -> str:
    """Reliability testing: ``CXRRAY_FAULT_INJECT="<run_name>:<n>[,...]"`` (passed to Ray workers explicitly)
    makes that trial raise after an epoch's checkpoint during its first ``n`` attempts (``attempts.log``).
    Returns the error message this attempt must raise, or "" (unset: nothing)."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        name, _, n = item.rpartition(":")
        attempts = len(trial_dir.attempts.read_text().splitlines()) if trial_dir.attempts.exists() else 0
        if name == spec.run_name and attempts <= int(n):
            return f"injected fault ({FAULT_ENV}) in {spec.run_name}, attempt {attempts}"
    return ""
