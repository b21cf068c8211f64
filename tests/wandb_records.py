"""Read W&B's offline run files (``run-<id>.wandb``) back: history rows and summary updates, in order.

The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of records, each with a
7-byte header: CRC32, length, kind; a record that does not fit is split FIRST / MIDDLE / LAST) of
``wandb_internal_pb2.Record`` messages. The tests use it to check what W&B would upload, not only that a
file exists.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every protobuf ``Record`` in one ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            yield rec


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def read_run(folder: Path, run_id: str) -> tuple[list[dict], dict]:
    """(history rows with ``_step``, the final summary) of run ``run_id`` from every offline segment under
    ``folder`` (``wandb/offline-run-<time>-<id>[-k]``, oldest first): what W&B would show after a sync."""
    history, summary = [], {}
    def order(f: Path) -> tuple[str, int]:  # W&B names a second segment in the same second <folder>-1, -2 ...
        stamp, _, rest = f.parent.name.removeprefix("offline-run-").partition("-")
        suffix = rest.removeprefix(run_id).lstrip("-")
        return stamp, int(suffix) if suffix.isdigit() else 0

    files = sorted(Path(folder).glob(f"wandb/offline-run-*-{run_id}*/run-{run_id}.wandb"), key=order)
    assert files, f"no offline W&B run {run_id} under {folder}"
    for f in files:
        for rec in records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append(_items(rec.history.item))
            elif kind == "summary":
                summary |= _items(rec.summary.update)
    return history, summary
