"""Prepare a run's data once: manifest -> patient-level splits -> the data stage's shard set.

The data stage owns ingest, identity and the cache (``cxrray.data.store.ShardStore``); this module turns a
study's manifest and task into the rows with their splits, asks the store for their ``ShardSet``, writes the
run's ``splits.csv`` and ``quarantine.csv`` (every row left out, with the reason naming file and row) and the
training class weights. Bad rows never stop the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrray.config import DataRef, RunLayout
from cxrray.data.checks import check_what_is_left, require_task_columns
from cxrray.data.manifest import read_manifest
from cxrray.data.splits import assign_splits
from cxrray.data.store import ShardSet, ShardStore
from cxrray.data.tasks import TASKS
from cxrray.registry import UserError
from cxrray.training.loop import class_weights


@dataclass(frozen=True)
class PreparedData:
    """A study's dataset as the sweep hands it on: the data stage's shard set, the run's quarantine and the
    training class weights."""

    shards: ShardSet
    class_weights: list[float]  # empty for multilabel tasks (unweighted BCE)
    quarantine: pl.DataFrame  # row, image_path, reason: everything left out, and why

    @property
    def data_id(self) -> str:
        return self.shards.data_id

    @property
    def shard_dir(self) -> Path:
        return self.shards.dir

    @property
    def counts(self) -> dict[str, int]:
        return self.shards.counts

    @property
    def splits(self) -> tuple[str, ...]:
        return self.shards.splits

    def ref(self) -> DataRef:
        """What a trial needs of this dataset (crosses into the trial's context)."""
        return DataRef(self.data_id, str(self.shard_dir.resolve()), tuple(self.class_weights), self.splits,
                       self.shards.size)


def prepare_data(manifest_path: str | Path, run_dir: Path, *, image_size: int, task: str,
                 split_seed: int = 0, fractions: tuple[float, ...] = (0.6, 0.2, 0.2), name: str = "",
                 frame: tuple[pl.DataFrame, pl.DataFrame] | None = None, check_masks: bool = True) -> PreparedData:
    """Split by patient, ingest into shards (cached), quarantine bad rows; needs Ray started.

    ``fractions``: (train, val, test), or (train, val) for a pretraining phase
    that is never tested. Writes ``<run_dir>/splits.csv`` (row, patient, label, source, view, sex, age, split,
    of the rows the shards hold) and ``<run_dir>/quarantine.csv`` (every row left out, with the reason naming
    file and row); with ``name`` (one of several datasets of a study) ``splits-<name>.csv`` and so on.
    ``frame``: the already-read ``(rows, quarantine)`` of ``manifest_path`` (for instance a dataset
    design's rows with their ``split``), so derived datasets keep the manifest's row numbers.
    ``check_masks``: supplied masks pass the plausibility gate (``--masks-unchecked`` turns it off).
    """
    manifest, quarantine = frame if frame is not None else read_manifest(manifest_path)
    the_task = TASKS.get(task)
    require_task_columns(manifest, task, manifest_path)
    unreadable = the_task.unreadable_values(manifest, str(manifest_path))  # named in quarantine.csv, not dropped
    quarantine = pl.concat([quarantine, unreadable]) if unreadable.height else quarantine
    manifest = the_task.rows_of(manifest.filter(~pl.col("row").is_in(unreadable["row"].implode())))
    outside = manifest.filter(~pl.col("label").is_in(the_task.labels))
    if outside.height and not the_task.multilabel:
        what = f"no 1 or 0 in {the_task.column}" if the_task.column else f"labels {sorted(set(outside['label']))}"
        print(f"[cxrray] {outside.height} row(s) with {what} are not part of task {task} and are not used",
              flush=True)
        manifest = manifest.filter(pl.col("label").is_in(the_task.labels))
    manifest = assign_splits(manifest, fractions, seed=split_seed)
    layout = RunLayout(Path(run_dir))
    shards = ShardStore(layout).get_or_ingest(manifest, image_size, check_masks=check_masks,
                                                          source=str(manifest_path))
    counts, bad = shards.counts, shards.bad_rows
    bad = bad.select(pl.col("row").cast(pl.Int64), "image_path",
                     pl.format("row {}: {}", pl.col("row"), pl.col("error")).alias("reason"))
    quarantine = pl.concat([quarantine, bad]).sort("row")
    quarantine.write_csv(layout.quarantine(name))
    if quarantine.height:
        print(f"[cxrray] {quarantine.height} row(s) left out, listed in {layout.quarantine(name)}:", flush=True)
        for r in quarantine.head(10).iter_rows(named=True):
            print(f"    {r['reason']}", flush=True)
    kept = manifest.filter(~pl.col("row").is_in(bad["row"].implode()))  # what the shards hold
    names = ("train", "val", "test")[:len(fractions)]
    check_what_is_left(kept, bad, task, manifest_path, names=names)  # a class the quarantine emptied: no trial
    for split in names:
        if not counts.get(split):
            raise UserError(f"{manifest_path}: the {split} split has no usable images")
    described = [c for c in ("view", "sex", "age") if c in manifest.columns]  # demographics per split (checklist)
    kept.select("row", "patient_id", "label", "source", *described, "split").write_csv(layout.splits(name))
    train_labels = kept.filter(pl.col("split") == "train")["label"]
    weights = [] if the_task.multilabel else class_weights(train_labels.to_list(), the_task)
    return PreparedData(shards, weights, quarantine)
