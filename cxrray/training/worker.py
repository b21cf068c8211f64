"""The generic trial driver: any registered method, on any session, epoch by epoch; rank 0 writes outputs.

``run_trial`` is all a trial is, whatever its method: build the method's ``Trial``, go on from the last
checkpoint, run the epochs (each logged to W&B, reported and checkpointed by ``EpochReporter``), then write
the per-image predictions, ``trial.json`` (with every epoch's training loss and, for a model that did
not learn, why it is degenerate) and the weights. ``train_loop_per_worker`` is the Ray Train entry
point: it only rebuilds the typed context, opens its session and calls ``run_trial``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from cxrray.config import TrialContext
from cxrray.data.tasks import TASKS, degeneracy
from cxrray.training.methods import METHODS, Trial, TrialMethod, epoch_seed, seeded_rng
from cxrray.training.outputs import EpochReporter, split_frame, write_outputs
from cxrray.training.session import Session, TrainSession


def _state(trial: Trial, epoch: int, losses: list[float]) -> dict[str, Any]:
    """What a checkpoint of ``epoch`` holds: the trial's state and the driver's losses so far (read when saved)."""
    return trial.state(epoch) | {"driver": {"train_loss": list(losses)}}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config`` is a ``TrialContext.to_dict()``."""
    run_trial(TrialContext.from_dict(config), TrainSession())


def run_trial(ctx: TrialContext, session: Session, method: TrialMethod | None = None) -> None:
    """Train ``ctx.spec`` with its registered method (or ``method``) on ``session``, reporting every epoch."""
    method = method or METHODS.get(ctx.spec.method)
    method.validate(ctx.spec)
    with seeded_rng(ctx.spec.seed, session.device):  # every method's build seeded, extra heads included
        trial = method.build(ctx, session)
    state = session.load_state()
    start = trial.load(state) if state is not None else 0
    losses = list((state or {}).get("driver", {}).get("train_loss", []))  # every epoch's, across attempts
    train_s = 0.0
    with EpochReporter(ctx, session, start, trial.config) as report:
        for epoch in range(start, trial.epochs):
            t0 = time.time()
            with seeded_rng(epoch_seed(ctx.spec, session.rank, epoch), session.device):  # dropout, per epoch
                metrics = trial.epoch(epoch)
            metrics |= {"epoch": epoch, "epoch_s": time.time() - t0, "epochs_done": epoch + 1,
                        "epochs_total": trial.epochs}
            train_s += time.time() - t0
            losses.append(float(metrics.get("train_loss", float("nan"))))
            report(epoch, metrics, functools.partial(_state, trial, epoch, losses))
            if metrics.get("stopped"):  # early stopping: the best-on-validation weights are restored in finish
                break
        report.inject_fault()  # also when a resumed attempt had no epoch left to run
    if session.rank == 0:
        out = trial.finish()
        evaluated = split_frame(out.frames, "test", "val")  # the test split, else validation
        verdict = degeneracy(evaluated, TASKS.get(ctx.spec.task), losses) if evaluated is not None else ""
        write_outputs(ctx.trial_dir, ctx.spec, out.frames, out.scores, out.weights,
                      out.meta | {"train_s": train_s, "train_loss": losses, "degenerate": verdict,
                                  "node_id": getattr(session, "node_id", "")}, report.tracker)
    session.finished()
