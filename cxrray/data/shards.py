"""Ray Data ingest: manifest rows -> decoded, resized images + masks -> parquet shards.

One streaming pass reads, resizes and encodes every image in parallel Ray tasks (``stream_manifest``) while
the driver writes each block to its split's shard as it arrives (``ingest``, ``ShardWriter``): nothing
dataset-wide is ever materialised, so memory is set by the blocks in flight (``cxrray.data.ingest``). A row
that cannot be used (unreadable or missing image, missing mask, wrong mask size, implausible mask, the same
bytes as an earlier row) is *reported*, by
file and manifest row, in ``bad_rows.csv`` and dropped; every other row goes on.
Shards are written per split (``<out>/train``, ``val``, ``test``) so that a
trial reads only what it is allowed to: training never opens the test shard.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from cxrray.data.batches import RowPool, ahead, pinned
from cxrray.data.images import ImageReadError, read_image, read_mask, resize, resize_mask
from cxrray.data.manifest import CARRIED_COLUMNS, REQUIRED_COLUMNS
from cxrray.data.maskgate import gate_supplied

if TYPE_CHECKING:  # Ray loads where a dataset is made, not on import
    import ray.data

SCALE = {t: float(np.iinfo(t).max) for t in ("uint8", "uint16")}  # stored types: full scale is the maximum
HASH_COLUMNS = ("image_hash", "mask_hash")  # content hashes: identity and duplicates, never written to shards
# The shard schema, declared once: every shard file holds these columns (``finding_<Name>`` columns travel
# along for multilabel tasks); a reader checks them and names the file that lacks one.
SHARD_COLUMNS: tuple[str, ...] = (*CARRIED_COLUMNS, "split", "image", "mask", "size", "pixel_dtype")


def check_schema(columns: list[str], where: str | Path) -> None:
    """Raise ``ValueError`` naming the shard file and the columns it lacks."""
    missing = [c for c in SHARD_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{where}: not a cxrray shard file (missing column(s) {missing}; a shard holds "
                         f"{list(SHARD_COLUMNS)})")


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
    return to_float(decode_pixels(batch))


def decode_pixels(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stored bytes as (B, S, S) arrays: integer pixels as stored (``pixel_dtype``) and uint8 masks. Half
    the bytes of float32 at uint16: a streaming reader holds and shuffles these, ``to_float`` per batch."""
    n = len(batch["image"])
    if n == 0:
        return batch
    size, dtype = int(batch["size"][0]), str(batch["pixel_dtype"][0])
    batch["image"] = np.frombuffer(b"".join(batch["image"]), dtype=dtype).reshape(n, size, size)
    batch["mask"] = np.frombuffer(b"".join(batch["mask"]), dtype=np.uint8).reshape(n, size, size).copy()
    return batch


def to_float(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``decode_pixels``' integer images as float32 [0, 1] (already float: unchanged). Full scale is the stored
    type's maximum (``SCALE``), the one rule ``InputPipeline.tensors`` applies on a device."""
    stored = batch["image"].dtype
    if len(batch["image"]) and stored.kind in "ui":
        batch["image"] = batch["image"].astype(np.float32) / np.float32(np.iinfo(stored).max)
    return batch


def read_split_local(split_dir: str | Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """One split's shards decoded in this process, in manifest-row order (analysis; no Ray)."""
    df = pl.read_parquet(Path(split_dir) / "*.parquet").sort("row")
    check_schema(df.columns, split_dir)
    df = df.head(limit) if limit else df
    return decode({c: df[c].to_numpy() for c in df.columns})


def _read_file(path: Path) -> dict[str, np.ndarray]:
    """One shard file, its schema checked, its pixels as stored (``decode_pixels``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    check_schema(table.column_names, path)
    item = decode_pixels({c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names})
    if len(set(item["pixel_dtype"].tolist())) > 1:
        raise ValueError(f"{path}: images of more than one pixel type {sorted(set(item['pixel_dtype']))}")
    return item


class LocalSplit:
    """One split's shards streamed in this process, file by file in manifest-row order, decoded per file by
    reader threads ``prefetch_files`` files ahead: the ``iter_batches`` of a Ray Dataset without Ray tasks. An
    inline trial reads this way: no task can be starved by training, nothing goes through the object store, no
    per-epoch start-up, and memory is a few shard files (256 images each) plus the shuffle buffer.

    ``stored_pixels``: batches keep the images' stored integer pixels (``decode_pixels``; the model input
    pipeline scales them where it runs, ``InputPipeline.tensors``): half the bytes to shuffle and to move to a
    GPU, and no conversion on the host. ``pin_memory`` (a CUDA trial): the thread that draws each batch ahead
    also copies its images and masks into page-locked torch tensors, so the trial's copy to the GPU is
    asynchronous (``non_blocking``) and overlaps the previous step instead of holding the feeding thread."""

    def __init__(self, split_dir: str | Path, prefetch_files: int = 2, stored_pixels: bool = False,
                 pin_memory: bool = False) -> None:
        self.files = sorted(Path(split_dir).glob("*.parquet"))
        self.prefetch_files, self.stored_pixels, self.pin_memory = prefetch_files, stored_pixels, pin_memory

    def count(self) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def _files(self):
        """Decoded files in order, ``prefetch_files`` of them read and decoded ahead at once by as many threads
        (parquet's decompression and numpy's conversion release the GIL: one reader thread capped a GPU trial at
        about 4,000 images/s of 224 px). An error surfaces here, with its traceback."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        files, depth = iter(self.files), max(self.prefetch_files, 1)
        with ThreadPoolExecutor(depth, thread_name_prefix="shard-reader") as pool:
            pending = deque(pool.submit(_read_file, f) for f in itertools.islice(files, depth))
            try:
                while pending:
                    item = pending.popleft().result()
                    for f in itertools.islice(files, 1):
                        pending.append(pool.submit(_read_file, f))
                    yield item
            finally:  # an abandoned iteration (an epoch stopped early) waits for no file it will not use
                for future in pending:
                    future.cancel()

    def iter_batches(self, *, batch_size: int, batch_format: str = "numpy",
                     local_shuffle_buffer_size: int | None = None, local_shuffle_seed: int | None = None,
                     drop_last: bool = False, **_: object):
        """Batches of ``batch_size`` rows (numpy dicts); with ``local_shuffle_buffer_size`` each batch is drawn at
        random (``local_shuffle_seed``) from a buffer of at least that many rows, as Ray Data's local shuffle."""
        if batch_format != "numpy":
            raise ValueError(f"LocalSplit yields numpy batches, not {batch_format!r}")
        return ahead(self._batches(batch_size, local_shuffle_buffer_size, local_shuffle_seed, drop_last), 2)

    def _batches(self, batch_size: int, local_shuffle_buffer_size: int | None, local_shuffle_seed: int | None,
                 drop_last: bool):
        rng = np.random.default_rng(local_shuffle_seed) if local_shuffle_buffer_size else None
        want = batch_size + (local_shuffle_buffer_size or 0)
        pool, pixels = RowPool(), None
        plain = (lambda b: b) if self.stored_pixels else to_float
        out = (lambda b: pinned(plain(b))) if self.pin_memory else plain
        for path, item in zip(self.files, self._files(), strict=True):
            if len(item["row"]):
                kind = str(item["pixel_dtype"][0])
                if pixels not in (None, kind):
                    raise ValueError(f"{path}: {kind} pixels, but earlier shard files of {path.parent} hold "
                                     f"{pixels}: one split is ingested with one pixel type")
                pixels = kind
            pool.add(item)
            while len(pool) >= want:
                yield out(pool.take(batch_size, rng))
        while len(pool) >= batch_size:
            yield out(pool.take(batch_size, rng))
        if len(pool) and not drop_last:
            yield out(pool.take(len(pool), rng))


def read_split(split_dir: str | Path) -> ray.data.Dataset:
    """One split's shards as a Ray Dataset of decoded float32 images and uint8 masks."""
    import ray.data

    return ray.data.read_parquet(str(split_dir)).map_batches(decode, batch_format="numpy")


# A split decoded in at most this many bytes is decoded once per trial and kept in Ray's object store: every
# epoch of a lazy dataset starts a new streaming execution (about 1.3 s here before the first batch), which on a
# small split costs as much as the epoch's training. A larger split streams (memory flat in its size).
DECODED_BUDGET = 512 * 2**20


def decoded_bytes(split_dir: str | Path) -> int:
    """The split's size once decoded (float32 image and uint8 mask per pixel), from the shards' metadata."""
    import pyarrow.parquet as pq

    files = sorted(Path(split_dir).glob("*.parquet"))
    if not files:
        return 0
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    size = pq.read_table(files[0], columns=["size"]).column(0)
    side = int(size[0].as_py()) if len(size) else 0
    return rows * side * side * 5


def train_split(split_dir: str | Path, budget: int = DECODED_BUDGET) -> ray.data.Dataset:
    """A split for a Ray Train fit: decoded once and kept (``materialize``) when it fits ``budget`` bytes, so no
    epoch pays the streaming start-up; streamed from the shards every epoch otherwise."""
    ds = read_split(split_dir)
    return ds.materialize() if decoded_bytes(split_dir) <= budget else ds


def pixel_hash(arr: np.ndarray) -> str:
    """The content hash of a decoded image or mask (XXH3, 128 bits, over its shape and pixels; about 60x faster
    than BLAKE2b, and an identity, not a secret): the same image under any name, patient, format or DICOM
    header (new UIDs, scrubbed tags) hashes the same."""
    import xxhash

    h = xxhash.xxh3_128(np.ascontiguousarray(arr).tobytes())
    h.update(repr(arr.shape).encode())
    return h.hexdigest()


def load_batch(batch: dict[str, np.ndarray], size: int, require_masks: bool,
               cover_masks: bool = True, check_masks: bool = True) -> dict[str, np.ndarray]:
    """Decode one batch of manifest rows; bad rows get an ``error`` text instead of raising. Every decoded image
    and mask gets its content hash (``image_hash``, ``mask_hash``: duplicates by content, the data's identity).

    ``cover_masks``: masks resized *covering* (for hiding the lungs); False: nearest (segmentation targets).
    ``check_masks``: every supplied mask passes the plausibility gate (``maskgate``) or the row is bad."""
    n = len(batch["row"])
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    errors = np.full(n, "", dtype=object)
    hashes = {"image_hash": np.full(n, "", dtype=object), "mask_hash": np.full(n, "", dtype=object)}
    for i in range(n):
        try:
            path, mpath = batch["image_path"][i], batch["mask_path"][i]
            img = read_image(path)
            hashes["image_hash"][i] = pixel_hash(img)
            if mpath:
                mask = read_mask(mpath)
                hashes["mask_hash"][i] = pixel_hash(mask)
                if mask.shape != img.shape:
                    raise ImageReadError(f"{mpath}: mask shape {mask.shape} differs from image shape {img.shape}")
                quality = gate_supplied(mask) if check_masks else None
                if quality is not None and not quality.ok:
                    raise ImageReadError(f"{mpath}: implausible lung mask: {quality.reason}")
                masks[i] = resize_mask(mask, size) if cover_masks else resize(mask, size, nearest=True)
            elif require_masks:
                raise ImageReadError(f"{path}: no lung mask (mask_path is empty)")
            images[i] = resize(img, size)
        except (ImageReadError, OSError) as exc:
            errors[i] = str(exc)
    out = {c: batch[c] for c in batch}
    out.update(image=images, mask=masks, error=errors, **hashes)
    return out


def load_and_encode(batch: dict[str, np.ndarray], size: int, require_masks: bool, cover_masks: bool,
                    dtype: str, check_masks: bool = True) -> dict[str, np.ndarray]:
    """``load_batch`` then ``encode`` in one task: only encoded pixels (2 bytes each at uint16) leave it, never
    the float32 frames; a bad row keeps its ``error`` and empty pixels."""
    out = load_batch(batch, size, require_masks, cover_masks, check_masks)
    out.pop("mask_path")
    return encode(out, dtype)


def load_row_groups(batch: dict[str, np.ndarray], rows_file: str, **kwargs) -> dict[str, np.ndarray]:
    """``load_and_encode`` of the manifest row groups named by ``batch["id"]`` (read from ``rows_file``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(rows_file) as f:
        table = pa.concat_tables([f.read_row_group(int(i)) for i in batch["id"]])
    return load_and_encode({c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}, **kwargs)


def stream_manifest(manifest: pl.DataFrame, *, size: int, require_masks: bool, dtype: str = "uint16",
                    rows_per_block: int = 32, cover_masks: bool = True, check_masks: bool = True,
                    rows_file: Path | None = None) -> ray.data.Dataset:
    """A lazy Ray Dataset of every manifest row, read, resized and encoded in parallel tasks, in manifest-row
    order, with an ``error`` column ("" for a good row). Nothing is materialised: the blocks in flight are what
    Ray Data's backpressure allows, whatever the size of the manifest.

    ``rows_file`` (on storage every node sees, e.g. under ``--out``): the rows are written there as parquet, one
    row group per block, and each task reads its own group, so the manifest never sits in the object store
    (without it, the row blocks are put there: fine for the small sets of the U-Net)."""
    import ray.data

    if "split" not in manifest.columns:
        manifest = manifest.with_columns(pl.lit("").alias("split"))
    findings = [c for c in manifest.columns if c.startswith("finding_")]  # multilabel targets travel along
    table = manifest.sort("row").select("row", *REQUIRED_COLUMNS, "split",
                                        *[pl.col(c).cast(pl.Utf8).fill_null("") for c in findings]).to_arrow()
    kwargs = {"size": size, "require_masks": require_masks, "cover_masks": cover_masks, "dtype": dtype,
              "check_masks": check_masks}
    if rows_file is not None and table.num_rows:
        import pyarrow.parquet as pq

        pq.write_table(table, rows_file, row_group_size=rows_per_block)
        groups = pq.ParquetFile(rows_file).metadata.num_row_groups
        # Ray types a batch function as taking any batch format; batch_format="numpy" hands it a dict
        return ray.data.range(groups, override_num_blocks=groups).map_batches(
            load_row_groups,  # type: ignore[arg-type]
            fn_kwargs={"rows_file": str(rows_file), **kwargs}, batch_format="numpy", batch_size=None)
    blocks = [table.slice(i, rows_per_block) for i in range(0, max(table.num_rows, 1), rows_per_block)]
    return ray.data.from_arrow(blocks).map_batches(load_and_encode,  # type: ignore[arg-type]  # (a dict, as above)
                                                   fn_kwargs=kwargs, batch_format="numpy", batch_size=rows_per_block)


def bad_frame(rows: list[dict]) -> pl.DataFrame:
    """Bad rows (row, image_path, error) in row order."""
    schema = {"row": pl.Int64, "image_path": pl.Utf8, "error": pl.Utf8}
    return pl.DataFrame(rows, schema=schema).sort("row") if rows else pl.DataFrame(schema=schema)


def decode_manifest(manifest: pl.DataFrame, *, size: int, require_masks: bool, dtype: str = "uint16",
                    rows_per_block: int = 32, cover_masks: bool = True) -> tuple[ray.data.Dataset, pl.DataFrame]:
    """Every row decoded and encoded (``stream_manifest``), materialised for callers that hold a small set (the
    U-Net's masked rows, a packed benchmark set): (encoded good rows, bad rows with the error)."""
    ds = stream_manifest(manifest, size=size, require_masks=require_masks, dtype=dtype,
                         rows_per_block=rows_per_block, cover_masks=cover_masks).materialize()
    from ray.data.expressions import col  # predicate expressions (string expressions are deprecated and warn)

    bad = ds.filter(expr=col("error") != "").select_columns(["row", "image_path", "error"]).to_pandas()
    good = ds.filter(expr=col("error") == "").drop_columns(["error", "image_path", *HASH_COLUMNS]).materialize()
    return good, bad_frame(bad.to_dict("records"))

