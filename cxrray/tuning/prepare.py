"""Prepare a run's data once: manifest -> patient-level splits -> Ray Data shards.

Shards are cached under ``RunLayout.shards(data_id, size)`` and reused by
every later trial and every resumed or extended sweep on the same data. Bad
rows never stop the run: they are listed in ``quarantine.csv`` with the reason.

Identity is content-aware. The cache is found by the manifest's rows and every file's size and modification
time (``files_fingerprint``), so a repaired file is ingested again; the data id, part of every trial id, is
the manifest's rows plus a digest of every image's and mask's pixels (taken during ingest), so repaired data
makes new trials while data that only moved (or was re-exported with the same pixels) keeps its trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrray.config import DataRef, RunLayout
from cxrray.data.checks import require_task_columns
from cxrray.data.ingest import ingest
from cxrray.data.manifest import files_fingerprint, manifest_fingerprint, read_manifest
from cxrray.data.splits import assign_splits
from cxrray.data.tasks import TASKS
from cxrray.registry import UserError
from cxrray.training.loop import class_weights


@dataclass(frozen=True)
class PreparedData:
    data_id: str
    shard_dir: Path
    counts: dict[str, int]
    class_weights: list[float]  # empty for multilabel tasks (unweighted BCE)
    quarantine: pl.DataFrame  # row, image_path, reason: everything left out, and why

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits that have images (a pretraining phase may have no test split)."""
        return tuple(s for s, n in self.counts.items() if n)

    def ref(self) -> DataRef:
        """What a trial needs of this dataset (crosses into the trial's context)."""
        return DataRef(self.data_id, str(self.shard_dir.resolve()), tuple(self.class_weights), self.splits)


def prepare_data(manifest_path: str | Path, run_dir: Path, *, image_size: int, task: str,
                 split_seed: int = 0, fractions: tuple[float, ...] = (0.6, 0.2, 0.2), name: str = "",
                 frame: tuple[pl.DataFrame, pl.DataFrame] | None = None, check_masks: bool = True) -> PreparedData:
    """Split by patient, ingest into shards (cached), quarantine bad rows; needs Ray started.

    ``fractions``: (train, val, test), or (train, val) for a pretraining phase
    that is never tested. Writes ``<run_dir>/splits.csv`` (row, patient, split)
    and ``<run_dir>/quarantine.csv`` (every row left out, with the reason naming
    file and row); with ``name`` (one of several datasets of a study) ``splits-<name>.csv`` and so on.
    ``frame``: the already-read ``(rows, quarantine)`` of ``manifest_path`` (for instance a dataset
    design's rows with their ``split``), so derived datasets keep the manifest's row numbers.
    ``check_masks``: supplied masks pass the plausibility gate (``--masks-unchecked`` turns it off).
    """
    manifest, quarantine = frame if frame is not None else read_manifest(manifest_path)
    the_task = TASKS.get(task)
    require_task_columns(manifest, task, manifest_path)
    manifest = the_task.rows_of(manifest)  # a finding task: label = the class its column gives
    outside = manifest.filter(~pl.col("label").is_in(the_task.labels))
    if outside.height and not the_task.multilabel:
        what = f"no 1 or 0 in {the_task.column}" if the_task.column else f"labels {sorted(set(outside['label']))}"
        print(f"[cxrray] {outside.height} row(s) with {what} are not part of task {task} and are not used",
              flush=True)
        manifest = manifest.filter(pl.col("label").is_in(the_task.labels))
    manifest = assign_splits(manifest, fractions, seed=split_seed)
    layout = RunLayout(Path(run_dir))
    manifest.select("row", "patient_id", "label", "source", "split").write_csv(layout.splits(name))
    key = {"manifest": manifest_fingerprint(manifest), "files": files_fingerprint(manifest),
           "masks_checked": check_masks, "image_size": image_size}
    cached = _cached(layout.shards_root, key)
    if cached is not None:
        shard_dir, done = cached
        data_id, counts = done["data_id"], done["counts"]
        bad = pl.read_csv(shard_dir / "bad_rows.csv", infer_schema=False)
        print(f"[cxrray] reusing shards {shard_dir} {counts}", flush=True)
    else:
        print(f"[cxrray] ingesting {manifest.height} images from {manifest_path} at {image_size}px", flush=True)
        # Written aside and renamed into place with _done.json inside: a half-written set is never reused.
        for stale in layout.shards_root.glob("*.partial-*"):  # a killed ingest's (the run is ours: tuning/runlock.py)
            shutil.rmtree(stale, ignore_errors=True)
        partial = layout.shards_root / f"ingest-{key['manifest']}-{image_size}px.partial-{os.getpid()}"
        result = ingest(manifest, partial, image_size=image_size, check_masks=check_masks)
        counts, bad = result.counts, result.bad_rows
        data_id = hashlib.sha256(f"{key['manifest']}:{result.content}:{check_masks}".encode()).hexdigest()[:12]
        (partial / "_done.json").write_text(json.dumps({"counts": counts, "manifest": str(manifest_path),
                                                         "data_id": data_id, "key": key}))
        shard_dir = layout.shards(data_id, image_size)
        shutil.rmtree(shard_dir, ignore_errors=True)  # the same bytes found under other stats: replaced
        os.replace(partial, shard_dir)
        print(f"[cxrray] shards written: {counts}", flush=True)
    bad = bad.select(pl.col("row").cast(pl.Int64), "image_path",
                     pl.format("row {}: {}", pl.col("row"), pl.col("error")).alias("reason"))
    quarantine = pl.concat([quarantine, bad]).sort("row")
    quarantine.write_csv(layout.quarantine(name))
    if quarantine.height:
        print(f"[cxrray] {quarantine.height} row(s) left out, listed in {layout.quarantine(name)}:", flush=True)
        for r in quarantine.head(10).iter_rows(named=True):
            print(f"    {r['reason']}", flush=True)
    for split in ("train", "val", "test")[:len(fractions)]:
        if not counts.get(split):
            raise UserError(f"{manifest_path}: the {split} split has no usable images")
    train_labels = manifest.filter((pl.col("split") == "train") & ~pl.col("row").is_in(bad["row"].implode()))["label"]
    weights = [] if the_task.multilabel else class_weights(train_labels.to_list(), the_task)
    return PreparedData(data_id, shard_dir, counts, weights, quarantine)


def _cached(shards_root: Path, key: dict) -> tuple[Path, dict] | None:
    """The finished shard set ingested from exactly these rows and files (sizes, times), if any."""
    for done in sorted(shards_root.glob(f"*-{key['image_size']}px/_done.json")):
        info = json.loads(done.read_text())
        if info.get("key") == key:
            return done.parent, info
    return None
