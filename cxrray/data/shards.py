"""Ray Data ingest: manifest rows -> decoded, resized images + masks -> parquet shards.

One pass reads every image in parallel Ray tasks. A row that cannot be used
(unreadable or missing image, missing mask, wrong mask size) is *reported*, by
file and manifest row, in ``bad_rows.csv`` and dropped; every other row goes on.
Shards are written per split (``<out>/train``, ``val``, ``test``) so that a
trial reads only what it is allowed to: training never opens the test shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from cxrray.data.images import ImageReadError, read_image, read_mask, resize
from cxrray.data.manifest import REQUIRED_COLUMNS

SHARD_COLUMNS = ("row", "patient_id", "source", "label", "severity", "split")


@dataclass(frozen=True)
class IngestResult:
    """Where the shards are and what was left out."""

    shard_dir: Path
    counts: dict[str, int]  # split -> good images
    bad_rows: pl.DataFrame  # row, image_path, mask_path, error

    def split_dir(self, split: str) -> Path:
        return self.shard_dir / split


def load_batch(batch: dict[str, np.ndarray], size: int, require_masks: bool) -> dict[str, np.ndarray]:
    """Decode one batch of manifest rows; bad rows get an ``error`` text instead of raising."""
    n = len(batch["row"])
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    errors = np.full(n, "", dtype=object)
    for i in range(n):
        try:
            img = read_image(batch["image_path"][i])
            mpath = batch["mask_path"][i]
            if mpath:
                mask = read_mask(mpath)
                if mask.shape != img.shape:
                    raise ImageReadError(f"{mpath}: mask shape {mask.shape} differs from image shape {img.shape}")
                masks[i] = resize(mask, size, nearest=True)
            elif require_masks:
                raise ImageReadError(f"{batch['image_path'][i]}: no lung mask (mask_path is empty)")
            images[i] = resize(img, size)
        except ImageReadError as exc:
            errors[i] = str(exc)
    out = {c: batch[c] for c in (*SHARD_COLUMNS, "image_path", "mask_path")}
    out.update(image=images, mask=masks, error=errors)
    return out


def _keep(batch: dict[str, np.ndarray], good: bool) -> dict[str, np.ndarray]:
    sel = (batch["error"] == "") if good else (batch["error"] != "")
    return {k: v[sel] for k, v in batch.items()}


def _in_split(batch: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    sel = batch["split"] == split
    return {k: v[sel] for k, v in batch.items()}


def ingest(manifest: pl.DataFrame, out_dir: str | Path, *, image_size: int,
           require_masks: bool = True, rows_per_block: int = 32) -> IngestResult:
    """Read every image of ``manifest`` (which must have a ``split`` column) into per-split shards."""
    import ray.data

    out = Path(out_dir)
    cols = ["row", *REQUIRED_COLUMNS, "split"]
    table = manifest.select(cols).to_arrow()
    ds = ray.data.from_arrow(table).repartition(max(1, manifest.height // rows_per_block))
    ds = ds.map_batches(load_batch, fn_kwargs={"size": image_size, "require_masks": require_masks},
                        batch_format="numpy", batch_size=rows_per_block).materialize()
    bad = ds.map_batches(_keep, fn_kwargs={"good": False}, batch_format="numpy") \
            .select_columns(["row", "image_path", "mask_path", "error"]).to_pandas()
    bad_rows = pl.from_pandas(bad) if len(bad) else pl.DataFrame(
        schema={"row": pl.Int64, "image_path": pl.Utf8, "mask_path": pl.Utf8, "error": pl.Utf8})
    bad_rows = bad_rows.sort("row")
    good = ds.map_batches(_keep, fn_kwargs={"good": True}, batch_format="numpy") \
             .drop_columns(["error", "image_path", "mask_path"]).materialize()
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        part = good.map_batches(_in_split, fn_kwargs={"split": split}, batch_format="numpy").materialize()
        counts[split] = part.count()
        target = out / split
        target.mkdir(parents=True, exist_ok=True)
        if counts[split]:
            part.repartition(max(1, counts[split] // 256)).write_parquet(str(target))
    out.mkdir(parents=True, exist_ok=True)
    bad_rows.write_csv(out / "bad_rows.csv")
    return IngestResult(out, counts, bad_rows)
