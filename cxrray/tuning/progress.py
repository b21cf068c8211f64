"""A Tune trial as cxrray sees it, and what a person watching the sweep reads: the trial's context carried in
Tune's config as one JSON text, its spec and folder name, the line when a trial starts, one per epoch and one per
finished trial with the sweep's status (``runner.launch_trials`` hands Tune these)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cxrray.config import RunLayout, TrialSpec


def trial_context(value: str | dict[str, Any]) -> dict[str, Any]:
    """The trial context a Tune config carries: one JSON text (``runner.launch_trials``), so that Tune's result
    rows, which flatten the config into columns, hold one column for it and not about 70 (Tune reads every trial's
    rows back into a pandas frame when the fit ends: 0.11 MiB a trial before); a dict, as older sweeps' configs
    hold it."""
    return json.loads(value) if isinstance(value, str) else value


def spec_of(trial) -> TrialSpec:
    """The cxrray spec of a Tune trial."""
    return TrialSpec.from_dict(trial_context(trial.config["trial"])["spec"])


def trial_dirname(trial) -> str:
    """A Tune trial's name and folder: its run name and trial id."""
    spec = spec_of(trial)
    return f"{spec.run_name}-{spec.trial_id}"


def status_line(trials: list, current, total: int, done: int, failed: int, best: tuple[float, str]) -> str:
    """'done 3 | running 1 | pending 4 | failed 0 | best so far: <run> val AUROC 0.912'.

    Tune creates grid trials lazily, so pending = total - done - failed - running."""
    running = [t.status for t in trials if t is not current].count("RUNNING")
    text = (f"done {done} | running {running} | pending {max(total - done - failed - running, 0)} | "
            f"failed {failed}")
    return text + (f" | best so far: {best[1]} val AUROC {best[0]:.3f}" if best[1] else "")


def progress_callback(total: int, already_done: int, layout: RunLayout):
    """A Tune callback printing a line when a trial starts, one per epoch and one per finished trial: what a
    person watching wants."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self) -> None:
            self.done, self.t0 = already_done, time.time()
            self.best, self.failed = (float("-inf"), ""), 0

        def _finished(self, trial, trials, status: str, extra: str = "") -> None:
            self.done += 1
            self.failed += status == "FAILED"
            auroc = (trial.last_result or {}).get("best_val_auroc")
            best = f" best val AUROC {auroc:.3f}" if isinstance(auroc, float) else ""
            print(f"[cxrray] {self.done}/{total} {status}: {spec_of(trial).run_name}{best} "
                  f"({time.time() - self.t0:.0f} s elapsed){extra}", flush=True)
            if isinstance(auroc, float) and auroc == auroc and auroc > self.best[0]:
                self.best = (auroc, spec_of(trial).run_name)
            line = status_line(trials, trial, total, self.done - self.failed, self.failed, self.best)
            print(f"[cxrray] {line}", flush=True)

        def on_trial_start(self, iteration, trials, trial, **info):
            spec = spec_of(trial)
            print(f"[cxrray] starting {spec.run_name} (trial {spec.trial_id})", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            spec = spec_of(trial)
            stage = f" (stage {result['stage']})" if "stage" in result else ""  # staged methods (FuCiTNet)
            print(f"[cxrray]   {spec.run_name} epoch {result.get('epoch', 0) + 1}/"
                  f"{result.get('epochs_total', spec.recipe.epochs)}{stage}: "
                  f"train loss {result.get('train_loss', float('nan')):.3f}, "
                  f"val AUROC {result.get('val_auroc', float('nan')):.3f} ({result.get('epoch_s', 0):.1f} s)",
                  flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            tdir = layout.trial(spec_of(trial).trial_id)
            stopped = tdir.stopped.exists() and not tdir.done
            self._finished(trial, trials, "stopped early (ASHA)" if stopped else "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            src, dst = Path(trial.local_path) / "error.txt", layout.trial(spec_of(trial).trial_id)
            try:
                if src.exists():  # keep the traceback with the trial, not only in Ray's session folder
                    dst.path.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst.error)
                    src = dst.error
            except OSError:  # --out failing: storage.StorageGuard ends the sweep and says so
                pass
            self._finished(trial, trials, "FAILED", f"; traceback in {src}")

    return Progress()
