"""Prepare a run's data once: manifest -> patient-level splits -> Ray Data shards.

Shards are cached under ``RunLayout.shards(data_id, size)`` and reused by
every later trial and every resumed or extended sweep on the same data. Bad
rows never stop the run: they are listed in ``quarantine.csv`` with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrray.config import DataRef, RunLayout
from cxrray.data.manifest import manifest_fingerprint, read_manifest
from cxrray.data.shards import ingest
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
                 frame: tuple[pl.DataFrame, pl.DataFrame] | None = None) -> PreparedData:
    """Split by patient, ingest into shards (cached), quarantine bad rows; needs Ray started.

    ``fractions``: (train, val, test), or (train, val) for a pretraining phase
    that is never tested. Writes ``<run_dir>/splits.csv`` (row, patient, split)
    and ``<run_dir>/quarantine.csv`` (every row left out, with the reason naming
    file and row); with ``name`` (one of several datasets of a study) ``splits-<name>.csv`` and so on.
    ``frame``: the already-read ``(rows, quarantine)`` of ``manifest_path`` (for instance a dataset
    design's rows with their ``split``), so derived datasets keep the manifest's row numbers.
    """
    manifest, quarantine = frame if frame is not None else read_manifest(manifest_path)
    the_task = TASKS.get(task)
    missing = [c for c in the_task.finding_columns if c not in manifest.columns]
    if missing:
        raise UserError(f"{manifest_path}: task {task} needs finding columns {missing} (1 / 0 / empty = unknown)")
    outside = manifest.filter(~pl.col("label").is_in(the_task.labels))
    if outside.height and not the_task.multilabel:
        print(f"[cxrray] {outside.height} row(s) with labels {sorted(set(outside['label']))} are not part of task "
              f"{task} and are not used", flush=True)
        manifest = manifest.filter(pl.col("label").is_in(the_task.labels))
    manifest = assign_splits(manifest, fractions, seed=split_seed)
    data_id = manifest_fingerprint(manifest)
    layout = RunLayout(Path(run_dir))
    manifest.select("row", "patient_id", "label", "source", "split").write_csv(layout.splits(name))
    shard_dir = layout.shards(data_id, image_size)
    done = shard_dir / "_done.json"
    if done.exists():
        counts = json.loads(done.read_text())["counts"]
        bad = pl.read_csv(shard_dir / "bad_rows.csv", infer_schema=False)
        print(f"[cxrray] reusing shards {shard_dir} {counts}", flush=True)
    else:
        print(f"[cxrray] ingesting {manifest.height} images from {manifest_path} at {image_size}px", flush=True)
        # Written aside and renamed into place with _done.json inside: a half-written set is never reused.
        for stale in shard_dir.parent.glob(f"{shard_dir.name}.partial-*"):  # a killed ingest's (the run is ours)
            shutil.rmtree(stale, ignore_errors=True)
        partial = shard_dir.with_name(f"{shard_dir.name}.partial-{os.getpid()}")
        result = ingest(manifest, partial, image_size=image_size)
        counts, bad = result.counts, result.bad_rows
        (partial / done.name).write_text(json.dumps({"counts": counts, "manifest": str(manifest_path)}))
        shutil.rmtree(shard_dir, ignore_errors=True)  # an earlier, unfinished attempt (no _done.json)
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
