"""Ray Data ingest: manifest rows -> decoded, resized images + masks -> parquet shards.

One streaming pass reads, resizes and encodes every image in parallel Ray tasks (``stream_manifest``) while
the driver writes each block to its split's shard as it arrives (``ingest``, ``ShardWriter``): nothing
dataset-wide is ever materialised, so memory is set by the blocks in flight. A row that cannot be used
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


class LocalSplit:
    """One split's shards streamed in this process, file by file in manifest-row order, decoded per file, with a
    reader thread ``prefetch_files`` files ahead: the ``iter_batches`` of a Ray Dataset without Ray tasks. An
    inline trial reads this way: no task can be starved by training, nothing goes through the object store, no
    per-epoch start-up, and memory is a few shard files (256 images each) plus the shuffle buffer."""

    def __init__(self, split_dir: str | Path, prefetch_files: int = 2) -> None:
        self.files = sorted(Path(split_dir).glob("*.parquet"))
        self.prefetch_files = prefetch_files

    def count(self) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def _files(self):
        """Decoded files, read ahead by a daemon thread (its queue bounds memory)."""
        import queue
        import threading

        import pyarrow.parquet as pq

        q: queue.Queue = queue.Queue(maxsize=self.prefetch_files)
        stop = threading.Event()

        def read() -> None:
            try:
                for f in self.files:
                    table = pq.read_table(f)
                    item = decode({c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names})
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as exc:  # surfaced in the consumer, with its traceback
                q.put(exc)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def iter_batches(self, *, batch_size: int, batch_format: str = "numpy",
                     local_shuffle_buffer_size: int | None = None, local_shuffle_seed: int | None = None,
                     drop_last: bool = False, **_: object):
        """Batches of ``batch_size`` rows (numpy dicts); with ``local_shuffle_buffer_size`` each batch is drawn at
        random (``local_shuffle_seed``) from a buffer of at least that many rows, as Ray Data's local shuffle."""
        if batch_format != "numpy":
            raise ValueError(f"LocalSplit yields numpy batches, not {batch_format!r}")
        rng = np.random.default_rng(local_shuffle_seed) if local_shuffle_buffer_size else None
        want = batch_size + (local_shuffle_buffer_size or 0)
        pool: dict[str, np.ndarray] | None = None

        def take(pool: dict[str, np.ndarray], n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            size = len(pool["row"])
            idx = rng.choice(size, n, replace=False) if rng is not None else np.arange(n)
            keep = np.ones(size, bool)
            keep[idx] = False
            return {k: v[idx] for k, v in pool.items()}, {k: v[keep] for k, v in pool.items()}

        for item in self._files():
            pool = item if pool is None else {k: np.concatenate([pool[k], item[k]]) for k in pool}
            while len(pool["row"]) >= want:
                batch, pool = take(pool, batch_size)
                yield batch
        while pool is not None and len(pool["row"]) >= batch_size:
            batch, pool = take(pool, batch_size)
            yield batch
        if pool is not None and len(pool["row"]) and not drop_last:
            yield take(pool, len(pool["row"]))[0]


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


def load_and_encode(batch: dict[str, np.ndarray], size: int, require_masks: bool, cover_masks: bool,
                    dtype: str) -> dict[str, np.ndarray]:
    """``load_batch`` then ``encode`` in one task: only encoded pixels (2 bytes each at uint16) leave it, never
    the float32 frames; a bad row keeps its ``error`` and empty pixels."""
    out = load_batch(batch, size, require_masks, cover_masks)
    out.pop("mask_path")
    return encode(out, dtype)


def stream_manifest(manifest: pl.DataFrame, *, size: int, require_masks: bool, dtype: str = "uint16",
                    rows_per_block: int = 32, cover_masks: bool = True) -> "ray.data.Dataset":  # noqa: F821
    """A lazy Ray Dataset of every manifest row, read, resized and encoded in parallel tasks, in manifest-row
    order, with an ``error`` column ("" for a good row). Nothing is materialised: the blocks in flight are what
    Ray Data's backpressure allows, whatever the size of the manifest."""
    import ray.data

    if "split" not in manifest.columns:
        manifest = manifest.with_columns(pl.lit("").alias("split"))
    findings = [c for c in manifest.columns if c.startswith("finding_")]  # multilabel targets travel along
    table = manifest.sort("row").select("row", *REQUIRED_COLUMNS, "split",
                                        *[pl.col(c).cast(pl.Utf8).fill_null("") for c in findings]).to_arrow()
    blocks = [table.slice(i, rows_per_block) for i in range(0, max(table.num_rows, 1), rows_per_block)]
    return ray.data.from_arrow(blocks).map_batches(
        load_and_encode, fn_kwargs={"size": size, "require_masks": require_masks, "cover_masks": cover_masks,
                                    "dtype": dtype}, batch_format="numpy", batch_size=rows_per_block)


def _bad_frame(rows: list[dict]) -> pl.DataFrame:
    schema = {"row": pl.Int64, "image_path": pl.Utf8, "error": pl.Utf8}
    return pl.DataFrame(rows, schema=schema).sort("row") if rows else pl.DataFrame(schema=schema)


def decode_manifest(manifest: pl.DataFrame, *, size: int, require_masks: bool, dtype: str = "uint16",
                    rows_per_block: int = 32, cover_masks: bool = True) -> tuple["ray.data.Dataset", pl.DataFrame]:  # noqa: F821
    """Every row decoded and encoded (``stream_manifest``), materialised for callers that hold a small set (the
    U-Net's masked rows, a packed benchmark set): (encoded good rows, bad rows with the error)."""
    ds = stream_manifest(manifest, size=size, require_masks=require_masks, dtype=dtype,
                         rows_per_block=rows_per_block, cover_masks=cover_masks).materialize()
    bad = ds.filter(expr="error != ''").select_columns(["row", "image_path", "error"]).to_pandas()
    good = ds.filter(expr="error == ''").drop_columns(["error", "image_path"]).materialize()
    return good, _bad_frame(bad.to_dict("records"))


class ShardWriter:
    """Per-split parquet shard files written as rows arrive (in manifest-row order), ``rows_per_shard`` rows
    each: ``<out>/<split>/part-00000.parquet`` ... Holds at most one unfinished shard per split."""

    def __init__(self, out: Path, rows_per_shard: int = 256) -> None:
        self.out, self.rows_per_shard = out, rows_per_shard
        self.pending: dict[str, list] = {}  # split -> tables not yet written
        self.waiting: dict[str, int] = {}  # split -> their rows
        self.counts: dict[str, int] = {}
        self.files: dict[str, int] = {}

    def add(self, split: str, table) -> None:
        self.pending.setdefault(split, []).append(table)
        self.counts[split] = self.counts.get(split, 0) + table.num_rows
        self.waiting[split] = self.waiting.get(split, 0) + table.num_rows
        if self.waiting[split] >= self.rows_per_shard:
            self._flush(split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = self.pending.pop(split, [])
        self.waiting[split] = 0
        if not tables:
            return
        k = self.files.get(split, 0)
        folder = self.out / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), folder / f"part-{k:05d}.parquet", compression="zstd")
        self.files[split] = k + 1

    def close(self) -> None:
        for split in list(self.pending):
            self._flush(split)


def ingest(manifest: pl.DataFrame, out_dir: str | Path, *, image_size: int, require_masks: bool = True,
           dtype: str = "uint16", rows_per_block: int = 32, rows_per_shard: int = 256) -> IngestResult:
    """Read every image of ``manifest`` (which must have a ``split`` column) into per-split shards, streaming:
    decoding runs in parallel Ray tasks, the driver writes each block's rows to their split's shard as it
    arrives, in manifest-row order (two ingests of one manifest give the same shards, so the same training
    order), and keeps only the bad rows (file, row, error). Memory does not grow with the manifest."""
    import ray.data

    out = Path(out_dir)
    ctx = ray.data.DataContext.get_current()
    ordered, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    writer, bad = ShardWriter(out, rows_per_shard), []
    try:
        stream = stream_manifest(manifest, size=image_size, require_masks=require_masks, dtype=dtype,
                                 rows_per_block=rows_per_block)
        for block in stream.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=4):
            errors = block.column("error").to_pylist()
            if any(errors):
                bad += [{"row": r, "image_path": p, "error": e} for r, p, e in zip(
                    block.column("row").to_pylist(), block.column("image_path").to_pylist(), errors) if e]
            splits = block.column("split").to_pylist()
            good = block.drop_columns(["error", "image_path"])
            for split in ("train", "val", "test"):
                keep = [i for i, (s, e) in enumerate(zip(splits, errors)) if s == split and not e]
                if keep:
                    writer.add(split, good.take(keep))
        writer.close()
    finally:
        ctx.execution_options.preserve_order = ordered
    for split in ("train", "val", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    bad_rows = _bad_frame(bad)
    bad_rows.write_csv(out / "bad_rows.csv")
    return IngestResult(out, {s: writer.counts.get(s, 0) for s in ("train", "val", "test")}, bad_rows)
