"""Ingest speed: decoding raw PNG/DICOM files vs streaming packed Parquet shards, both through Ray Data.

Same images (a 400-patient phantom at 256 px, half of them DICOM), same
machine, one run, best of two passes each. Reports images/s and the ratio
shards / raw. On one local disk with small 256 px files both are bound by Ray
Data's per-pass start-up; shards pay off where listing and opening millions of
files on shared storage dominates.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def _rate(make_ds, n: int, repeat: int = 2) -> float:
    """Best images/s over ``repeat`` full passes (each pass builds the dataset anew)."""
    best = 0.0
    for _ in range(repeat):
        ds = make_ds()
        t = time.perf_counter()
        seen = sum(len(b["row"]) for b in ds.iter_batches(batch_size=64, batch_format="numpy"))
        assert seen == n, (seen, n)
        best = max(best, n / (time.perf_counter() - t))
    return best


def run() -> list[dict]:
    import ray
    import ray.data

    from cxrray.data.manifest import REQUIRED_COLUMNS, load_manifest
    from cxrray.data.pack import pack, read_shards
    from cxrray.data.phantom import write_phantom
    from cxrray.data.shards import load_batch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = write_phantom(Path(tmp) / "ph", n_patients=400, seed=0)
            df = load_manifest(manifest)
            pack(manifest, Path(tmp) / "packed", size=256, dtype="uint16", shard_mb=64)
            table = df.select("row", *REQUIRED_COLUMNS).with_columns(split=None).to_arrow()
            raw_rate = _rate(lambda: ray.data.from_arrow(table).map_batches(
                load_batch, fn_kwargs={"size": 256, "require_masks": True}, batch_format="numpy"), df.height)
            shard_rate = _rate(lambda: read_shards(Path(tmp) / "packed"), df.height)
    finally:
        ray.shutdown()
    return [{"benchmark": "ingest: shards / raw files", "value": shard_rate / raw_rate, "unit": "x", "goal": "info",
             "ok": True,
             "detail": f"raw {raw_rate:.0f} img/s, shards {shard_rate:.0f} img/s ({df.height} images, 256 px)"}]


if __name__ == "__main__":
    for row in run():
        print(row)
