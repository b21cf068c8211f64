"""Pack a manifest into Parquet shards of decoded, resized images and masks.

    python -m cxrray.data.pack MANIFEST OUT --size 256 --dtype uint8 --shard-mb 256

Millions of small files are slow to list and read on a cluster; a few hundred
MB-sized Parquet files stream well through Ray Data. Images are stored as
uint8 or uint16 (``--dtype``; uint16 keeps 12-16 bit DICOM detail), masks as
uint8, with every manifest column and the manifest ``row``. Rows that cannot
be read go to ``OUT/quarantine.csv`` with the reason; the rest is packed.
``read_shards`` gives back the float images of decoding the raw files, within half a step of the storage
dtype (0.5 / 255 at uint8, 0.5 / 65535 at uint16).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from cxrray.data.manifest import read_manifest
from cxrray.data.shards import SCALE, decode_manifest, read_split

if TYPE_CHECKING:  # Ray loads where a dataset is made, not on import
    import ray.data


def pack(manifest_path: str | Path, out: str | Path, *, size: int, dtype: str = "uint8",
         shard_mb: float = 256.0) -> dict[str, int]:
    """Write shards under ``out``; returns counts of packed and quarantined rows. Needs Ray started."""

    if dtype not in SCALE:
        raise ValueError(f"dtype must be one of {list(SCALE)}, got {dtype!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, quarantine = read_manifest(manifest_path)
    bytes_per_row = size * size * (np.dtype(dtype).itemsize + 1)
    per_file = max(1, int(shard_mb * 2**20 // bytes_per_row))
    good, bad = decode_manifest(rows, size=size, require_masks=False, dtype=dtype)
    good.write_parquet(str(out / "shards"), min_rows_per_file=per_file, max_rows_per_file=per_file,
                       compression="zstd")
    bad = bad.select("row", "image_path", pl.format("row {}: {}", "row", "error").alias("reason"))
    pl.concat([quarantine, bad]).sort("row").write_csv(out / "quarantine.csv")
    return {"packed": rows.height - bad.height, "quarantined": quarantine.height + bad.height}


def read_shards(out: str | Path) -> ray.data.Dataset:
    """The packed shards as a Ray Dataset with float32 [0, 1] images, like ``load_batch`` gives."""
    return read_split(Path(out) / "shards")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrray.data.pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=256, help="square side in pixels")
    p.add_argument("--dtype", choices=sorted(SCALE), default="uint8")
    p.add_argument("--shard-mb", type=float, default=256.0, help="target size of one Parquet file")
    p.add_argument("--address", help="Ray cluster address (default: a local instance)")
    args = p.parse_args(argv)
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING)
    print(pack(args.manifest, args.out, size=args.size, dtype=args.dtype, shard_mb=args.shard_mb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
