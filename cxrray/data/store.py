"""The data stage's one door: rows with their splits in, a typed ``ShardSet`` out (ingested once, then cached).

``ShardStore(root).get_or_ingest(rows, size)`` owns the data's identity and its cache, as MONAI's
``PersistentDataset`` keys its cache inside the data class. The cache is found by the rows (their content and
split) and every image's and mask's size and modification time (``files_fingerprint``), so a repaired file is
ingested again; the data id, part of every trial id, is the rows plus a digest of every image's and mask's
pixels (taken during the ingest), so repaired data makes new trials while data that only moved (or was
re-exported with the same pixels) keeps its trials. A set is written aside and renamed into place with
``_done.json`` inside: a half-written set is never reused. Only this module writes shard sets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cxrray.config import RunLayout
from cxrray.data.ingest import ingest
from cxrray.data.manifest import files_fingerprint, manifest_fingerprint


@dataclass(frozen=True)
class ShardSet:
    """One prepared dataset at one image size: its id, folder, per-split counts and the rows the ingest left out
    (row, image_path, error)."""

    data_id: str
    dir: Path
    size: int
    counts: dict[str, int]
    bad_rows: pl.DataFrame

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits that have images (a pretraining phase may have no test split)."""
        return tuple(s for s, n in self.counts.items() if n)


class ShardStore:
    """Every shard set of a run (under ``RunLayout.shards_root``, named by ``RunLayout.shards``), found by what
    it was made from."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.root = Path(layout.shards_root)

    def get_or_ingest(self, rows: pl.DataFrame, size: int, *, check_masks: bool = True, source: str = "") -> ShardSet:
        """The shard set of ``rows`` (with their ``split``) at ``size`` px: the cached one made from exactly these
        rows and files, else a new ingest (Ray must be running). ``source`` names the manifest in messages."""
        key = {"manifest": manifest_fingerprint(rows), "files": files_fingerprint(rows),
               "masks_checked": check_masks, "image_size": size}
        cached = self._cached(key)
        if cached is not None:
            folder, done = cached
            print(f"[cxrray] reusing shards {folder} {done['counts']}", flush=True)
            return ShardSet(done["data_id"], folder, size, done["counts"],
                            pl.read_csv(folder / "bad_rows.csv", infer_schema=False))
        print(f"[cxrray] ingesting {rows.height} images from {source or 'the manifest'} at {size}px", flush=True)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.partial-*"):  # a killed ingest's (the run is ours: tuning/runlock.py)
            shutil.rmtree(stale, ignore_errors=True)
        partial = self.root / f"ingest-{key['manifest']}-{size}px.partial-{os.getpid()}"
        result = ingest(rows, partial, image_size=size, check_masks=check_masks)
        data_id = hashlib.sha256(f"{key['manifest']}:{result.content}:{check_masks}".encode()).hexdigest()[:12]
        (partial / "_done.json").write_text(json.dumps({"counts": result.counts, "manifest": source,
                                                         "data_id": data_id, "key": key}))
        folder = self.layout.shards(data_id, size)
        shutil.rmtree(folder, ignore_errors=True)  # the same bytes found under other stats: replaced
        os.replace(partial, folder)
        print(f"[cxrray] shards written: {result.counts}", flush=True)
        return ShardSet(data_id, folder, size, result.counts, result.bad_rows)

    def _cached(self, key: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
        """The finished shard set ingested from exactly these rows and files (sizes, times), if any."""
        for done in sorted(self.root.glob(f"*-{key['image_size']}px/_done.json")):
            info = json.loads(done.read_text())
            if info.get("key") == key:
                return done.parent, info
        return None
