"""One writer per run directory: a sweep takes ``--out``'s lock before it writes anything there.

The lock is an OS file lock (``filelock``: ``flock`` on POSIX) on ``RunLayout.lock``, held for the life of the
process: a killed sweep's lock is released by the kernel with the process, so the next sweep takes it over
without any staleness rule. Next to it, ``RunLayout.lock_holder`` names the holder (pid, host, start time,
command), so a second sweep into the same ``--out`` is refused with one line naming it, before Ray starts.
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

_HELD: dict[Path, object] = {}  # run directory -> its lock, kept for the life of this process


def claim(run_dir: Path) -> None:
    """Take ``run_dir``'s lock (creating the folder) or raise a ``UserError`` naming the sweep that holds it."""
    from filelock import FileLock, Timeout

    layout = RunLayout(Path(run_dir).resolve())
    if layout.root in _HELD:
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(layout.lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{layout.root} is in use by another sweep ({holder(layout)}); wait for it to end or use "
                        f"another --out") from None
    layout.lock_holder.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(),
                                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                              "command": " ".join(sys.argv)}))
    _HELD[layout.root] = lock


def holder(layout: RunLayout) -> str:
    """The holder in words, from its record ("pid 123 on host-a since 2026-11-30T10:00:00+0000")."""
    try:
        h = json.loads(layout.lock_holder.read_text())
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')}: {h.get('command', '')}".rstrip(": ")
