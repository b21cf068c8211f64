"""Prepare a run's data once: manifest -> patient-level splits -> Ray Data shards.

Shards are cached under ``<run_dir>/shards/<data_id>-<size>px`` and reused by
every later trial and every resumed or extended sweep on the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrray.data.manifest import load_manifest, manifest_fingerprint
from cxrray.data.shards import ingest
from cxrray.data.splits import assign_splits
from cxrray.data.tasks import TASKS
from cxrray.training.loop import class_weights


@dataclass(frozen=True)
class PreparedData:
    data_id: str
    shard_dir: Path
    counts: dict[str, int]
    class_weights: list[float]
    bad_rows: pl.DataFrame


def prepare_data(manifest_path: str | Path, run_dir: Path, *, image_size: int, task: str,
                 split_seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> PreparedData:
    """Split by patient, ingest into shards (cached), report bad rows; needs Ray started."""
    manifest = load_manifest(manifest_path)
    manifest = assign_splits(manifest, fractions, seed=split_seed)
    data_id = manifest_fingerprint(manifest)
    shard_dir = run_dir / "shards" / f"{data_id}-{image_size}px"
    done = shard_dir / "_done.json"
    if done.exists():
        info = json.loads(done.read_text())
        counts = info["counts"]
        bad = pl.read_csv(shard_dir / "bad_rows.csv", infer_schema=False).with_columns(pl.col("row").cast(pl.Int64))
        print(f"[cxrray] reusing shards {shard_dir} {counts}", flush=True)
    else:
        print(f"[cxrray] ingesting {manifest.height} images from {manifest_path} at {image_size}px", flush=True)
        result = ingest(manifest, shard_dir, image_size=image_size)
        counts, bad = result.counts, result.bad_rows
        done.write_text(json.dumps({"counts": counts, "manifest": str(manifest_path)}))
        print(f"[cxrray] shards written: {counts}", flush=True)
    if bad.height:
        print(f"[cxrray] {bad.height} row(s) skipped, listed in {shard_dir / 'bad_rows.csv'}:", flush=True)
        for r in bad.head(10).iter_rows(named=True):
            print(f"    row {r['row']}: {r['error']}", flush=True)
    for split, n in counts.items():
        if n == 0:
            raise ValueError(f"{manifest_path}: the {split} split has no usable images")
    train_labels = manifest.filter((pl.col("split") == "train") & ~pl.col("row").is_in(bad["row"].implode()))["label"]
    weights = class_weights(train_labels.to_list(), TASKS.get(task))
    return PreparedData(data_id, shard_dir, counts, weights, bad)
