"""ASHA early stopping for hyper-parameter axes only.

The protocol axes (representation, backbone, pretraining path, design, task,
seed, fold) are the experiment: every one of their cells must finish. Within a
cell, the settings of the ``--search`` axes (learning rate, batch size, ...) are
only candidates, and ASHA (Li et al., 2020, Tune's ``AsyncHyperBandScheduler``)
may stop the weak ones at a rung. ``CellASHA`` keeps one ASHA per protocol cell,
so a setting is only ever compared with other settings of the same cell.

A stopped setting is recorded in ``TrialDir.stopped`` (``trials/<id>/stopped.json``) by the driver
(not by the trial, which cannot tell a scheduler stop from a shutdown), so a
resumed sweep does not train it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cxrray.config import TrialDir, TrialSpec
from cxrray.records import StoppedRecord
from cxrray.registry import UserError


@dataclass(frozen=True)
class EarlyStop:
    """ASHA settings: a setting is judged first after ``grace_period`` epochs, then at every rung
    ``grace_period * reduction_factor**k``; at a rung, it goes on only if it is in the top
    ``1 / reduction_factor`` of its cell's settings seen at that rung so far."""

    axes: tuple[str, ...]  # the recipe fields searched (the hyper-parameter axes)
    grace_period: int = 1
    reduction_factor: float = 2.0

    def __post_init__(self) -> None:
        if not self.axes:
            raise UserError("ASHA stops hyper-parameter settings early: give the axes to search (--search)")
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise UserError(f"ASHA needs grace_period >= 1 and reduction_factor > 1, got {self.grace_period}, "
                             f"{self.reduction_factor}")


def protocol_cell(spec: TrialSpec, axes: Sequence[str]) -> str:
    """The spec with its hyper-parameter axes blanked: every setting of one protocol cell shares it."""
    return spec.protocol_cell(tuple(axes))


def selection_metric(spec: TrialSpec) -> tuple[str, str]:
    """The per-epoch metric and mode ASHA compares, the same one model selection uses."""
    return ("val_loss", "min") if spec.recipe.select_by == "loss" else ("val_auroc", "max")


def cell_scheduler(specs: Sequence[TrialSpec], early: EarlyStop, spec_of: Callable[[Any], TrialSpec],
                   on_stop: Callable[[TrialSpec, dict], None]):
    """A Tune scheduler running one ASHA per protocol cell (imports Tune only when called)."""
    from ray.tune.result import RESULT_DUPLICATE
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

    max_t: dict[str, int] = {}
    for s in specs:  # epochs may itself be a searched axis: the cell's longest setting sets the top rung
        key = protocol_cell(s, early.axes)
        max_t[key] = max(max_t.get(key, 0), s.recipe.epochs)

    class CellASHA(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self._cells: dict[str, AsyncHyperBandScheduler] = {}

        def _asha(self, trial) -> AsyncHyperBandScheduler:
            spec = spec_of(trial)
            key = protocol_cell(spec, early.axes)
            if key not in self._cells:
                metric, mode = selection_metric(spec)
                top = max_t.get(key, spec.recipe.epochs)
                self._cells[key] = AsyncHyperBandScheduler(
                    time_attr="epochs_done", metric=metric, mode=mode, max_t=top,
                    grace_period=min(early.grace_period, top), reduction_factor=early.reduction_factor,
                    stop_last_trials=False)  # a setting that reaches the last epoch finishes on its own
            return self._cells[key]

        def on_trial_add(self, tune_controller, trial) -> None:
            self._asha(trial).on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            action = self._asha(trial).on_trial_result(tune_controller, trial, result)
            if result.get("epochs_done", 0) >= spec_of(trial).recipe.epochs:
                return TrialScheduler.CONTINUE  # its last epoch is recorded for the rung, and it finishes
            if action == TrialScheduler.STOP and RESULT_DUPLICATE not in result:
                on_stop(spec_of(trial), result)
            return action

        def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
            asha = self._asha(trial)
            if trial.trial_id in asha._trial_info:
                asha.on_trial_complete(tune_controller, trial, result)

        def on_trial_remove(self, tune_controller, trial) -> None:
            self._asha(trial)._trial_info.pop(trial.trial_id, None)

        def debug_string(self) -> str:
            return f"ASHA per protocol cell: {len(self._cells)} cell(s)"

    return CellASHA()


def mark_stopped(trial_dir: TrialDir, spec: TrialSpec, result: dict) -> None:
    """Record an ASHA stop with the last epoch's metrics; such a trial counts as done on resume."""
    StoppedRecord(spec, epochs_done=int(result.get("epochs_done", 0)), best_val_auroc=result.get("best_val_auroc"),
                  val_auroc=result.get("val_auroc"), val_loss=result.get("val_loss"),
                  stopped=time.time()).write(trial_dir)


def experiments(specs: Sequence[TrialSpec], size: int, early: EarlyStop | None = None) -> list[list[int]]:
    """The sweep's trials (indices into ``specs``, in order) cut into Tune experiments of at most ``size`` trials.

    Tune's driver keeps every trial of an experiment (its config, results and metric history), so one experiment
    of 10,000 trials grows the driver by about 0.1 MiB a trial; experiments run one after another keep it flat.
    With ASHA a protocol cell is never cut (its settings are compared with each other), so an experiment may
    hold more than ``size`` trials when one cell does."""
    if size < 1:
        raise ValueError(f"an experiment holds at least one trial, got {size}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(protocol_cell(s, early.axes) if early else str(i), []).append(i)
    out: list[list[int]] = []
    for members in groups.values():
        if not out or len(out[-1]) + len(members) > size:
            out.append([])
        out[-1].extend(members)
    return [b for b in out if b]
