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

from cxrray.data.images import ImageReadError, read_image, read_mask, resize, resize_mask
from cxrray.data.manifest import REQUIRED_COLUMNS

SCALE = {"uint8": 255.0, "uint16": 65535.0}


def encode(batch: dict[str, np.ndarray], dtype: str = "uint16") -> dict[str, np.ndarray]:
    """Float [0, 1] images -> integer pixels (round to nearest) stored as raw bytes.

    Raw bytes in a binary column decode with one memcpy; Parquet's per-element
    decoding of tensor columns was several times slower than reading PNGs.
    uint16 keeps 12-16 bit DICOM detail; uint8 halves the size for 8-bit sources.
    """
    img = np.rint(batch["image"] * SCALE[dtype]).astype(dtype)
    batch["image"] = np.array([x.tobytes() for x in img], dtype=object)
    batch["mask"] = np.array([x.tobytes() for x in batch["mask"].astype(np.uint8)], dtype=object)
    batch["size"] = np.full(len(img), img.shape[-1], np.int32)
    batch["pixel_dtype"] = np.full(len(img), dtype, dtype=object)
    return batch


def decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of ``encode``: float32 [0, 1] images (B, S, S) and uint8 masks."""
    n = len(batch["image"])
    if n == 0:
        return batch
    size, dtype = int(batch["size"][0]), str(batch["pixel_dtype"][0])
    img = np.frombuffer(b"".join(batch["image"]), dtype=dtype).reshape(n, size, size)
    batch["image"] = img.astype(np.float32) / np.float32(SCALE[dtype])
    batch["mask"] = np.frombuffer(b"".join(batch["mask"]), dtype=np.uint8).reshape(n, size, size).copy()
    return batch


def read_split_local(split_dir: str | Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """One split's shards decoded in this process, in manifest-row order (analysis; no Ray)."""
    df = pl.read_parquet(Path(split_dir) / "*.parquet").sort("row")
    df = df.head(limit) if limit else df
    return decode({c: df[c].to_numpy() for c in df.columns})


def read_split(split_dir: str | Path) -> "ray.data.Dataset":  # noqa: F821
    """One split's shards as a Ray Dataset of decoded float32 images and uint8 masks."""
    import ray.data

    return ray.data.read_parquet(str(split_dir)).map_batches(decode, batch_format="numpy")


@dataclass(frozen=True)
class IngestResult:
    """Where the shards are and what was left out."""

    shard_dir: Path
    counts: dict[str, int]  # split -> good images
    bad_rows: pl.DataFrame  # row, image_path, error

    def split_dir(self, split: str) -> Path:
        return self.shard_dir / split


def load_batch(batch: dict[str, np.ndarray], size: int, require_masks: bool,
               cover_masks: bool = True) -> dict[str, np.ndarray]:
    """Decode one batch of manifest rows; bad rows get an ``error`` text instead of raising.

    ``cover_masks``: masks resized *covering* (for hiding the lungs); False: nearest (segmentation targets)."""
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
                masks[i] = resize_mask(mask, size) if cover_masks else resize(mask, size, nearest=True)
            elif require_masks:
                raise ImageReadError(f"{batch['image_path'][i]}: no lung mask (mask_path is empty)")
            images[i] = resize(img, size)
        except ImageReadError as exc:
            errors[i] = str(exc)
    out = {c: batch[c] for c in batch}
    out.update(image=images, mask=masks, error=errors)
    return out


def _in_split(batch: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    sel = batch["split"] == split
    return {k: v[sel] for k, v in batch.items()}


def decode_manifest(manifest: pl.DataFrame, *, size: int, require_masks: bool, dtype: str = "uint16",
                    rows_per_block: int = 32, cover_masks: bool = True) -> tuple["ray.data.Dataset", pl.DataFrame]:  # noqa: F821
    """Decode every row in parallel Ray tasks: (encoded good rows, materialised; bad rows with the error).

    A bad row never raises: it comes back in the second table (row, image_path, error).
    """
    import ray.data

    if "split" not in manifest.columns:
        manifest = manifest.with_columns(pl.lit("").alias("split"))
    findings = [c for c in manifest.columns if c.startswith("finding_")]  # multilabel targets travel along
    table = manifest.select("row", *REQUIRED_COLUMNS, "split",
                            *[pl.col(c).cast(pl.Utf8).fill_null("") for c in findings]).to_arrow()
    ds = ray.data.from_arrow(table).repartition(max(1, manifest.height // rows_per_block))
    ds = ds.map_batches(load_batch, fn_kwargs={"size": size, "require_masks": require_masks,
                                               "cover_masks": cover_masks},
                        batch_format="numpy", batch_size=rows_per_block).materialize()
    bad = ds.filter(expr="error != ''").select_columns(["row", "image_path", "error"]).to_pandas()
    bad_rows = pl.from_pandas(bad).sort("row") if len(bad) else pl.DataFrame(
        schema={"row": pl.Int64, "image_path": pl.Utf8, "error": pl.Utf8})
    good = ds.filter(expr="error == ''").drop_columns(["error", "image_path", "mask_path"]) \
             .map_batches(encode, fn_kwargs={"dtype": dtype}, batch_format="numpy").materialize()
    return good, bad_rows


def ingest(manifest: pl.DataFrame, out_dir: str | Path, *, image_size: int,
           require_masks: bool = True, dtype: str = "uint16") -> IngestResult:
    """Read every image of ``manifest`` (which must have a ``split`` column) into per-split shards."""
    out = Path(out_dir)
    good, bad_rows = decode_manifest(manifest, size=image_size, require_masks=require_masks, dtype=dtype)
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        part = good.map_batches(_in_split, fn_kwargs={"split": split}, batch_format="numpy").materialize()
        counts[split] = part.count()
        target = out / split
        target.mkdir(parents=True, exist_ok=True)
        if counts[split]:
            # Sorted by manifest row: decoding finishes in any order, and a shard's row order is the order a
            # seeded shuffle starts from, so without it two ingests of one manifest train differently.
            part.sort("row").repartition(max(1, counts[split] // 256)).write_parquet(str(target), compression="zstd")
    bad_rows.write_csv(out / "bad_rows.csv")
    return IngestResult(out, counts, bad_rows)
