"""W&B run handling for one trial (rank 0 only), offline by default.

The run id is the trial id, so a resumed trial continues the same W&B run (``resume="allow"``). History
has each epoch once: every epoch's row is committed when it is logged (so ``finish`` cannot flush a held
row over the summary), and the last logged epoch is kept in the trial folder (``TrialDir.wandb_step``), so an
attempt that goes on from an older checkpoint does not log the epochs it repeats a second time. The
summary is written last: the values of the epoch whose model was kept and tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrray.wandb_run import open_run


class Tracker:
    """A thin wrapper that is a no-op when W&B is disabled."""

    def __init__(self, mode: str, *, run_id: str, name: str, project: str, group: str,
                 config: dict[str, Any], directory: Path, step_file: Path | None = None) -> None:
        self.run = None
        self._step_file = step_file  # None: no memory across attempts
        if mode == "disabled":
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.run = open_run(mode, directory=directory, name=name, id=run_id, project=project, group=group,
                            config=config)  # online within a time budget, else offline in one line

    def last_step(self) -> int:
        """The last epoch already in this run's history (-1: none)."""
        return int(self._step_file.read_text()) if self._step_file and self._step_file.exists() else -1

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's row, unless an earlier attempt already logged that epoch."""
        if self.run is None or step <= self.last_step():
            return
        self.run.log(metrics, step=step, commit=True)
        if self._step_file is not None:
            self._step_file.write_text(str(step))

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def artifact(self, path: Path, name: str, kind: str) -> None:
        """Attach a file (the trial's predictions) to the run as a versioned artifact."""
        if self.run is not None:
            import wandb

            art = wandb.Artifact(name, type=kind)
            art.add_file(str(path))
            self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
