"""The run directory failing under a running sweep: a full disk, a file system turned read-only, a quota.

The driver probes ``--out`` every few seconds while Tune runs (a ``tune.Stopper``: free space, then one small
write that is synced and removed), and at once whenever Ray logs a warning or an error. When the probe fails,
every trial is stopped at once, instead of each failing, retrying and failing again with its own traceback;
Ray's complaints are dropped, and the sweep ends with one line (``StorageError``, exit 75, "try again later")
that says what failed and what is kept: every finished trial, and each unfinished one's last epoch
checkpoint. Fixing the cause and rerunning the same command resumes the run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from cxrray.config import RunLayout, TrialDir, TrialSpec
from cxrray.records import TrialRecord
from cxrray.registry import UserError

# OS errors that say the storage, not the program, is at fault: disk full, quota, read-only, permissions, I/O.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
MIN_FREE = 64 * 2**20  # below this, --out counts as full: an epoch checkpoint or a shard would not fit


class StorageError(UserError):
    """``--out`` cannot take writes any more; the sweep stopped and resumes once that is fixed."""

    exit_code = 75  # EX_TEMPFAIL: retry once the cause is fixed


def storage_problem(root: Path, min_free: int = MIN_FREE) -> str:
    """'' when ``root`` takes a write, else what is wrong in words."""
    try:
        free = shutil.disk_usage(root).free
        if free < min_free:
            return f"no space left ({free / 2**20:.1f} MiB free)"
        probe = Path(root) / f".cxrray.probe-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return ""


def stopped_message(root: Path, problem: str, finished: int, total: int) -> str:
    """The one line a stopped sweep ends with."""
    return (f"{root} cannot be written ({problem}): the sweep stopped; {finished} of {total} trials finished and "
            f"are kept, the others resume from their last checkpoint: free space or make --out writable, then "
            f"rerun the same command")


class StorageGuard(logging.Filter):
    """Watches ``root`` while Tune runs: ``stopper()`` ends the whole experiment once ``root`` stops taking
    writes (``problem`` says why), and, installed as a logging filter (``with guard:``), it drops Ray's warnings
    and errors once the storage is found failing (checking it when such a record comes), since each would only
    repeat, with a traceback, what the sweep's last line says."""

    def __init__(self, root: Path, every_s: float = 2.0) -> None:
        super().__init__()
        self.root, self.every_s = Path(root), every_s
        self.problem, self.last, self.dropped = "", 0.0, 0

    def check(self, force: bool = False) -> str:
        if not self.problem and (force or time.monotonic() - self.last >= self.every_s):
            self.last = time.monotonic()
            self.problem = storage_problem(self.root)
        return self.problem

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith("ray"):
            return True
        if self.check(force=True):
            self.dropped += 1
            return False
        return True

    def stopper(self):
        """A Tune stopper: every trial stops as soon as the storage fails."""
        from ray import tune

        guard = self

        class StorageStopper(tune.Stopper):
            def __call__(self, trial_id: str, result: dict) -> bool:
                return bool(guard.check())

            def stop_all(self) -> bool:
                return bool(guard.check())

        return StorageStopper()

    def _handlers(self) -> list[logging.Handler]:
        return [*logging.getLogger("ray").handlers, *logging.getLogger().handlers]

    def __enter__(self) -> StorageGuard:
        for h in self._handlers():
            h.addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handlers():
            h.removeFilter(self)


@contextmanager
def storage_stops(layout: RunLayout, specs: list[TrialSpec]) -> Iterator[None]:
    """An ``OSError`` of failing storage (disk full, read-only) that escapes the guard (for example while the
    results are gathered, or when a finishing trial freed space just as the guard looked) ends the sweep with
    the same one line as the guard's stop: what failed and how many trials are kept."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        finished = sum(layout.trial(s.trial_id).finished for s in specs)
        problem = (exc.strerror or str(exc)).lower()
        raise StorageError(stopped_message(layout.root, problem, finished, len(specs))) from exc


def set_aside_damaged(trial: TrialDir, name: str) -> None:
    """A finished trial whose predictions file or record cannot be read (truncated, overwritten) is set aside as
    ``predictions.parquet.damaged`` and trains again, said in one line naming the file: it never stops every
    rerun."""
    if not trial.done:
        return
    for path, read in ((trial.predictions, pl.read_parquet_schema), (trial.meta, TrialRecord.read_file)):
        try:
            read(path)
        except Exception as exc:  # noqa: BLE001  (polars, arrow and json raise several kinds for a damaged file)
            kept = trial.predictions.with_name(trial.predictions.name + ".damaged")
            os.replace(trial.predictions, kept)
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            print(f"[cxrray] {path}: unreadable ({why}); trial {name} trains again (its predictions are kept as "
                  f"{kept.name})", flush=True)
            return
