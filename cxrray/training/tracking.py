"""W&B run handling for one trial (rank 0 only), offline by default.

The run id is the trial id, so a resumed trial continues the same W&B run
(``resume="allow"``) and its steps are the epochs, never duplicated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """A thin wrapper that is a no-op when W&B is disabled."""

    def __init__(self, mode: str, *, run_id: str, name: str, project: str, group: str,
                 config: dict[str, Any], directory: Path) -> None:
        self.run = None
        if mode == "disabled":
            return
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(id=run_id, name=name, project=project, group=group, config=config,
                              dir=str(directory), mode=mode, resume="allow", reinit="finish_previous",
                              settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

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

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
