"""The inline trial's reader (``LocalSplit``): every row once per epoch with the pixels ``decode`` gives, a seeded
shuffle that mixes files, memory bounded by the shuffle buffer, errors naming the file, and stored integer pixels
scaled where the model runs exactly as ``decode`` scales them on the host."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from cxrray.data.batches import RowPool
from cxrray.data.ingest import ShardWriter
from cxrray.data.shards import LocalSplit, encode, read_split_local
from cxrray.representations import InputPipeline

ROWS, SIZE = 50, 8


def _write_split(out, rows=ROWS, per_file=10, dtype="uint16", start=0):
    """Synthetic shard files (``per_file`` rows each) of random images and masks in row order."""
    rng = np.random.default_rng(start)
    n = rows
    batch = {"row": np.arange(start, start + n), "patient_id": np.array([f"p{i // 2}" for i in range(n)], object),
             "source": np.full(n, "s", object), "label": np.array(["CVP", "NOR"] * (n // 2), object),
             "severity": np.full(n, "", object), "view": np.full(n, "PA", object), "sex": np.full(n, "F", object),
             "age": np.full(n, "50", object), "split": np.full(n, "train", object),
             "image": rng.random((n, SIZE, SIZE)).astype(np.float32), "mask": rng.random((n, SIZE, SIZE)) > 0.5}
    encoded = encode(batch, dtype)
    writer = ShardWriter(out, rows_per_shard=per_file)
    for i in range(0, n, per_file):
        writer.add("train", pa.table({k: v[i:i + per_file] for k, v in encoded.items()}))
    writer.close()
    return out / "train"


@pytest.fixture()
def split(tmp_path):
    return _write_split(tmp_path)


def _rows(batches):
    return [int(r) for b in batches for r in b["row"]]


@pytest.mark.parametrize("stored, pinned", [(False, False), (True, False), (True, True), (False, True)])
def test_a_shuffled_epoch_gives_every_row_once_with_the_decoded_pixels(split, stored, pinned):
    """Also with ``pin_memory`` (a CUDA trial's batches as page-locked torch tensors; plain ones without CUDA):
    the same pixels, bit for bit, once the model input pipeline has them."""
    reference = read_split_local(split)
    at = {int(r): i for i, r in enumerate(reference["row"])}
    seen = []
    for b in LocalSplit(split, stored_pixels=stored, pin_memory=pinned).iter_batches(
            batch_size=8, local_shuffle_buffer_size=16, local_shuffle_seed=4):
        if pinned:
            assert isinstance(b["image"], torch.Tensor) and isinstance(b["mask"], torch.Tensor)
            assert b["image"].dtype == (torch.uint16 if stored else torch.float32)
            assert b["image"].is_pinned() == torch.cuda.is_available()
        else:
            assert b["image"].dtype == (np.uint16 if stored else np.float32)
        image, mask = InputPipeline.tensors(b, torch.device("cpu"))
        idx = [at[int(r)] for r in b["row"]]
        assert torch.equal(image[:, 0], torch.from_numpy(reference["image"][idx]))  # bit for bit, both ways
        assert torch.equal(mask[:, 0], torch.from_numpy(reference["mask"][idx]).float())
        assert list(b["patient_id"]) == [reference["patient_id"][i] for i in idx]
        seen += [int(r) for r in b["row"]]
    assert sorted(seen) == list(range(ROWS))


def test_the_shuffle_is_seeded_mixes_files_and_in_order_reading_keeps_row_order(split):
    def epoch(seed):
        return _rows(LocalSplit(split).iter_batches(batch_size=8, local_shuffle_buffer_size=16,
                                                    local_shuffle_seed=seed))

    assert epoch(1) == epoch(1) and epoch(1) != epoch(2)
    first = epoch(1)[:8]
    assert len({r // 10 for r in first}) >= 2  # the first batch already draws from more than one file
    assert _rows(LocalSplit(split).iter_batches(batch_size=7)) == list(range(ROWS))
    assert _rows(LocalSplit(split).iter_batches(batch_size=7, drop_last=True)) == list(range(49))


def test_the_pool_copies_only_drawn_rows_and_stays_bounded():
    pool, rng, drawn = RowPool(), np.random.default_rng(0), []
    for k in range(40):  # 40 files of 10 rows through a buffer of 30 + batches of 10
        pool.add({"row": np.arange(10 * k, 10 * k + 10), "image": np.arange(10 * k, 10 * k + 10)[:, None] * 1.0})
        while len(pool) >= 40:
            batch = pool.take(10, rng)
            assert np.array_equal(batch["image"][:, 0], batch["row"])  # rows stay whole
            drawn += batch["row"].tolist()
    assert len(pool.arrays["row"]) <= 2 * (40 + 10)  # capacity: never more than twice the buffer and a file
    drawn += pool.take(len(pool), rng)["row"].tolist()
    assert sorted(drawn) == list(range(400)) and drawn != sorted(drawn)


def test_an_abandoned_epoch_stops_its_threads_and_a_bad_file_is_named(split, tmp_path):
    it = LocalSplit(split).iter_batches(batch_size=4)
    next(it)
    it.close()
    deadline = time.time() + 5
    while time.time() < deadline and any(t.name.startswith(("batches-ahead", "shard-reader"))
                                         for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name.startswith(("batches-ahead", "shard-reader")) for t in threading.enumerate())
    (split / "part-00002.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(Exception, match=r"part-00002.parquet"):
        list(LocalSplit(split).iter_batches(batch_size=4))


def test_one_split_of_two_pixel_types_is_refused_naming_the_file(tmp_path):
    split = _write_split(tmp_path / "a", rows=20)
    other = _write_split(tmp_path / "b", rows=10, dtype="uint8", start=20)
    (other / "part-00000.parquet").rename(split / "part-00009.parquet")
    with pytest.raises(ValueError, match=r"part-00009.parquet: uint8 pixels, but earlier shard files"):
        list(LocalSplit(split, stored_pixels=True).iter_batches(batch_size=4))
