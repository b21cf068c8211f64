"""One writer per run directory: a sweep, and a re-analysis, take ``--out``'s lock before writing anything there.

The lock is an OS file lock (``flock``) on ``RunLayout.lock``, held for the life of the process: a killed
sweep's lock is released by the kernel with the process, so the next sweep takes it over without any
staleness rule. The lock file is held open read-only: an open writable file would keep the file system from
being remounted read-only under the sweep (which ``storage.py`` must report, not cause). Next to it,
``RunLayout.lock_holder`` names the holder (pid, host, start time, command), so a second sweep into the same
``--out`` (or ``python -m cxrray.analysis`` on a directory a sweep is writing) is refused with one line naming
it, before Ray starts. A sweep's own closing analysis runs in the process that holds the lock.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from cxrray.config import RunLayout
from cxrray.registry import UserError

_HELD: dict[Path, int] = {}  # run directory -> its lock, kept for the life of this process
_MADE: set[Path] = set()  # run directories this process created (a refused run leaves none of them behind)


def claim(run_dir: Path) -> None:
    """Take ``run_dir``'s lock (creating the folder) or raise a ``UserError`` naming the sweep that holds it."""
    import fcntl

    layout = RunLayout(Path(run_dir).resolve())
    if layout.root in _HELD:
        return
    fd = -1
    try:
        if not layout.root.exists():
            _MADE.add(layout.root)
        layout.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(layout.lock, os.O_RDONLY | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        layout.lock_holder.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(),
                                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                  "command": " ".join(sys.argv)}))
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{layout.root} is in use by another cxrray process ({holder(layout)}); wait for it to "
                        f"end or use another --out") from None
    except OSError as exc:  # read-only, not a folder, no space: the user's to fix, before anything runs
        if fd >= 0:
            os.close(fd)
        raise UserError(f"--out {layout.root} cannot be written: {exc.strerror or exc} "
                        f"({exc.filename or layout.root})") from None
    _HELD[layout.root] = fd


def holder(layout: RunLayout) -> str:
    """The holder in words, from its record ("pid 123 on host-a since 2026-11-30T10:00:00+0000")."""
    try:
        h = json.loads(layout.lock_holder.read_text())
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')}: {h.get('command', '')}".rstrip(": ")


def forget_refused() -> None:
    """After a refusal (bad input, before any trial): release this process's locks and remove the run folders it
    created that hold nothing but the lock's files, so a refused command leaves no ``--out`` behind."""
    layouts = [RunLayout(root) for root in _HELD]
    for layout in layouts:
        os.close(_HELD.pop(layout.root))
        if layout.root in _MADE and {p.name for p in layout.root.iterdir()} <= {layout.lock.name,
                                                                                layout.lock_holder.name}:
            for path in (layout.lock, layout.lock_holder):
                path.unlink(missing_ok=True)
            layout.root.rmdir()
            _MADE.discard(layout.root)
