"""Ingest: a manifest's images streamed into per-split parquet shards, with content-aware identity.

One Ray Data pipeline reads, resizes, gates and encodes the rows in parallel tasks (``shards.stream_manifest``);
the driver writes each block's rows to their split's shard as the block arrives, in manifest-row order. Each
decoded image and mask is hashed (``shards.pixel_hash``), which gives two things:

- **duplicates by content**: a row whose image has the same pixels as an earlier row's (under another name,
  path, patient id, format or DICOM header) is quarantined with the row it duplicates, whatever its split:
  one image never sits in two splits, nor twice in one (the earlier row keeps its place); likewise a row whose
  lung mask has the same pixels as an earlier row's (one mask file serving two images) is quarantined naming
  it, since a mask belongs to one image (``--masks-unchecked`` turns this off with the gate);
- **the data's identity** (``IngestResult.content``): a digest of every row's image and mask pixels, so a
  repaired or replaced file makes a new dataset id (and new trials), while a moved or re-exported one with the
  same pixels does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import polars as pl

# Ingest's in-flight blocks: 16 MiB of object store per CPU, about 2.5 blocks of ``BLOCK_MIB`` each. Blocks of 32
# rows under 4 MiB per CPU paid a task's start-up every 32 images (170 images/s per CPU at 128 px); 128-row blocks
# under 32 MiB: 242; with Ray Data's operator reservation off (both CPUs at work) 16 MiB is as fast as 32 and
# holds half (bench/scale.py, bench/README.md).
STORE_MIB_PER_CPU = 16
BLOCK_MIB = 6  # a block's encoded pixels (uint16 image + uint8 mask): 128 rows at 128 px, 16 at 512 px


def block_rows(image_size: int) -> int:
    """Rows per ingest task: about ``BLOCK_MIB`` of encoded pixels, 16 to 128 rows (a task's float32 frames stay
    at most about as large as the 32-row blocks at 512 px were)."""
    return int(min(max(BLOCK_MIB * 2**20 // (image_size * image_size * 3), 16), 128))

if TYPE_CHECKING:  # (read lazily: the stage imports no Arrow to answer --help)
    import pyarrow as pa


@dataclass(frozen=True)
class IngestResult:
    """Where the shards are, what was left out, and the content digest of the input files."""

    shard_dir: Path
    counts: dict[str, int]  # split -> good images
    bad_rows: pl.DataFrame  # row, image_path, error
    content: str = ""  # digest of every row's (row, image pixels, mask pixels)

    def split_dir(self, split: str) -> Path:
        return self.shard_dir / split


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


class Duplicates:
    """Content hashes seen so far (16 bytes each): the first row of each image, and the later rows that repeat
    it. Streaming: rows arrive in manifest-row order, so 'earlier' is the manifest's order."""

    def __init__(self, masks: bool = True) -> None:
        self.first: dict[str, tuple[int, str]] = {}  # image hash -> (row, path)
        self.masks: dict[str, tuple[int, str]] | None = {} if masks else None  # mask hash -> (row, mask path)

    def check(self, row: int, path: str, digest: str, mask_digest: str = "", mask_path: str = "") -> str:
        """'' for a new image with a mask of its own, else the reason naming the earlier row: the same image, or
        the same lung mask as another image's (a mask belongs to one image: one mask file serving two images,
        or a copy of it, is another patient's lungs for at least one of them)."""
        if not digest:
            return ""
        if digest in self.first:
            first_row, first_path = self.first[digest]
            return f"{path}: the same image as row {first_row} ({first_path}): a duplicate, left out"
        if mask_digest and self.masks is not None:
            if mask_digest in self.masks:
                first_row, first_mask = self.masks[mask_digest]
                return (f"{mask_path}: the same lung mask as row {first_row} ({first_mask}) serves this image too; a "
                        f"mask belongs to one image: left out")
            self.masks[mask_digest] = (row, mask_path)
        self.first[digest] = (row, path)
        return ""


def ingest(manifest: pl.DataFrame, out_dir: str | Path, *, image_size: int, require_masks: bool = True,
           dtype: str = "uint16", rows_per_block: int | None = None, rows_per_shard: int = 256,
           check_masks: bool = True, store_mib_per_cpu: float = STORE_MIB_PER_CPU) -> IngestResult:
    """Read every image of ``manifest`` (which must have a ``split`` column) into per-split shards, streaming:
    decoding runs in parallel Ray tasks, the driver writes each block's rows to their split's shard as it
    arrives, in manifest-row order (two ingests of one manifest give the same shards, so the same training
    order), and keeps only the bad rows (file, row, error) and one hash per distinct image. The blocks in flight
    are capped at ``store_mib_per_cpu`` MiB of object store per CPU of the cluster (``rows_per_block``: rows per
    task, ``block_rows(image_size)`` unless given), and the manifest's rows are
    read by the tasks from a file, never put in the object store: the peak is set by the cluster, never by the
    dataset."""
    import ray
    import ray.data

    from cxrray.data.shards import HASH_COLUMNS, bad_frame, stream_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ray.data.DataContext.get_current()
    ordered, limits = ctx.execution_options.preserve_order, ctx.execution_options.resource_limits
    reserved = ctx.op_resource_reservation_enabled
    ctx.execution_options.preserve_order = True
    # Ray Data keeps half of the budget (op_resource_reservation_ratio 0.5) as each operator's reservation; with
    # this one operator on 2 CPUs that left one task running at a time (63 tasks' 14.8 s of work took 14.3 s).
    # The object-store cap below still bounds what is in flight.
    ctx.op_resource_reservation_enabled = False
    cpus = max(ray.cluster_resources().get("CPU", 1), 1) if ray.is_initialized() else 1
    ctx.execution_options.resource_limits = limits.copy(object_store_memory=store_mib_per_cpu * cpus * 2**20)
    writer, bad, dups, content = ShardWriter(out, rows_per_shard), [], Duplicates(check_masks), hashlib.sha256()
    masked = check_masks and "mask_path" in manifest.columns
    mask_of = dict(zip(manifest["row"].to_list(), manifest["mask_path"].to_list(), strict=True)) if masked else {}
    try:
        stream = stream_manifest(manifest, size=image_size, require_masks=require_masks, dtype=dtype,
                                 rows_per_block=rows_per_block or block_rows(image_size), check_masks=check_masks,
                                 rows_file=out / "_rows.parquet")
        for batch in stream.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=4):
            block = cast("pa.Table", batch)  # (Ray types a batch as any format; "pyarrow" gives a Table)
            rows, paths = block.column("row").to_pylist(), block.column("image_path").to_pylist()
            image_hashes, mask_hashes = (block.column(c).to_pylist() for c in HASH_COLUMNS)
            errors = block.column("error").to_pylist()
            for k, (row, path, ih, mh) in enumerate(zip(rows, paths, image_hashes, mask_hashes, strict=True)):
                content.update(f"{row}:{ih}:{mh};".encode())
                if not errors[k]:
                    errors[k] = dups.check(row, path, ih, mh, mask_of.get(row) or "")
            bad += [{"row": r, "image_path": p, "error": e} for r, p, e in zip(rows, paths, errors, strict=True) if e]
            splits = block.column("split").to_pylist()
            good = block.drop_columns(["error", "image_path", *HASH_COLUMNS])
            for split in ("train", "val", "test"):
                keep = [i for i, (s, e) in enumerate(zip(splits, errors, strict=True)) if s == split and not e]
                if keep:
                    writer.add(split, good.take(keep))
        writer.close()
    finally:
        ctx.execution_options.preserve_order, ctx.execution_options.resource_limits = ordered, limits
        ctx.op_resource_reservation_enabled = reserved
        (out / "_rows.parquet").unlink(missing_ok=True)
    for split in ("train", "val", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    bad_rows = bad_frame(bad)
    bad_rows.write_csv(out / "bad_rows.csv")
    return IngestResult(out, {s: writer.counts.get(s, 0) for s in ("train", "val", "test")}, bad_rows,
                        content.hexdigest())
