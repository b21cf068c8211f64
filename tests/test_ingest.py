"""Ray Data ingest: bad rows are reported by file and row, every good row is kept."""

import shutil

import numpy as np
import polars as pl
import pytest

from cxrray.analysis.checklist import demographics
from cxrray.data.images import read_image, resize
from cxrray.data.ingest import ingest
from cxrray.data.manifest import load_manifest
from cxrray.data.shards import read_split
from cxrray.data.splits import assign_splits


def test_bad_rows_reported_and_the_rest_ingested(tmp_path, phantom_manifest, ray_local):
    data = tmp_path / "data"
    shutil.copytree(phantom_manifest.parent, data)
    df = pl.read_csv(data / "manifest.csv", infer_schema=False)
    pngs = [i for i, p in enumerate(df["image_path"]) if p.endswith(".png")]
    corrupt, missing, nomask, wrongmask = pngs[:4]
    (data / df["image_path"][corrupt]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / df["image_path"][missing]).unlink()
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == nomask).then(pl.lit("")).otherwise(pl.col("mask_path"))
                         .alias("mask_path"))
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / df["mask_path"][wrongmask])
    df.write_csv(data / "manifest.csv")

    manifest = assign_splits(load_manifest(data / "manifest.csv"), seed=0)
    result = ingest(manifest, tmp_path / "shards", image_size=32)

    bad = result.bad_rows
    assert bad["row"].to_list() == sorted(i + 1 for i in (corrupt, missing, nomask, wrongmask))
    msgs = dict(zip(bad["row"].to_list(), bad["error"].to_list(), strict=True))
    assert "unreadable image" in msgs[corrupt + 1] and df["image_path"][corrupt] in msgs[corrupt + 1]
    assert "file not found" in msgs[missing + 1]
    assert "no lung mask" in msgs[nomask + 1]
    assert "mask shape (10, 10) differs" in msgs[wrongmask + 1]
    assert sum(result.counts.values()) == manifest.height - 4
    assert (tmp_path / "shards" / "bad_rows.csv").exists()

    test = read_split(result.split_dir("test")).to_pandas()
    train = read_split(result.split_dir("train")).to_pandas()
    assert set(test["patient_id"]).isdisjoint(train["patient_id"])
    assert set(test["split"]) == {"test"}
    r = test.iloc[0]
    src = manifest.filter(pl.col("row") == int(r["row"])).row(0, named=True)
    expected = resize(read_image(src["image_path"]), 32)
    assert np.abs(np.asarray(r["image"]) - expected).max() <= 0.5 / 65535 + 1e-7  # uint16 storage
    assert set(np.unique(np.asarray(r["mask"]))) <= {0, 1}


def test_one_mask_serving_two_images_is_named_and_left_out(tmp_path, phantom_manifest, ray_local):
    """A mask belongs to one image: a row pointing at another row's mask file, or at a copy of it, passes the
    shape gate but is quarantined naming the row whose mask it is; ``--masks-unchecked`` turns this off."""
    data = tmp_path / "data"
    shutil.copytree(phantom_manifest.parent, data)
    df = pl.read_csv(data / "manifest.csv", infer_schema=False)
    other = df["patient_id"] != df["patient_id"][0]
    first_other = int(np.flatnonzero(other.to_numpy())[0])
    second_other = int(np.flatnonzero(other.to_numpy())[1])
    shutil.copy(data / df["mask_path"][0], data / "copied_mask.png")
    paths = df["mask_path"].to_list()
    paths[first_other], paths[second_other] = paths[0], "copied_mask.png"
    df.with_columns(pl.Series("mask_path", paths)).write_csv(data / "manifest.csv")
    manifest = assign_splits(load_manifest(data / "manifest.csv"), seed=0)
    result = ingest(manifest, tmp_path / "shards", image_size=32)
    msgs = dict(zip(result.bad_rows["row"].to_list(), result.bad_rows["error"].to_list(), strict=True))
    assert sorted(msgs) == [first_other + 1, second_other + 1]
    assert msgs[first_other + 1].endswith(f"the same lung mask as row 1 ({data / paths[0]}) serves this image too; a "
                                          "mask belongs to one image: left out")
    assert msgs[second_other + 1].startswith(str(data / "copied_mask.png"))
    unchecked = ingest(manifest, tmp_path / "unchecked", image_size=32, check_masks=False)
    assert unchecked.bad_rows.height == 0


def test_prepare_quarantines_manifest_and_image_problems(tmp_path, phantom_manifest, ray_local):
    from cxrray.tuning.prepare import prepare_data

    data = tmp_path / "data"
    shutil.copytree(phantom_manifest.parent, data)
    lines = (data / "manifest.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",NOR,", ",XYZ,").replace(",CVP,", ",XYZ,").replace(",OVP,", ",XYZ,") \
        .replace(",OBP,", ",XYZ,")
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    broken = pl.read_csv(data / "manifest.csv", infer_schema=False)["image_path"][5]
    (data / broken).write_bytes(b"not an image")
    run = tmp_path / "run"
    run.mkdir()
    prep = prepare_data(data / "manifest.csv", run, image_size=32, task="CL2")
    q = pl.read_csv(run / "quarantine.csv")
    assert q["row"].to_list() == [2, 6]
    assert "row 2: unknown label 'XYZ'" in q["reason"][0] and broken in q["reason"][1]
    assert sum(prep.counts.values()) == len(lines) - 1 - 2
    splits = pl.read_csv(run / "splits.csv")
    assert splits.group_by("patient_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert 6 not in splits["row"].to_list() and splits.height == sum(prep.counts.values())  # what the shards hold
    assert dict(demographics(splits).select("split", "images").rows()) == prep.counts  # the checklist's counts too


def test_shards_give_identical_pixels_to_raw_files(tmp_path, ray_local):
    """Real 8-bit PNGs packed at native size as uint8 read back as decoded, within half a grey level of the 8-bit
    storage (decoding stretches each image over [0, 1]; uint16 storage keeps 0.5 / 65535); a bad row is
    quarantined."""
    from conftest import REAL_MINI

    from cxrray.data.pack import pack, read_shards

    data = tmp_path / "mini"
    shutil.copytree(REAL_MINI.parent, data)
    lines = (data / "manifest.csv").read_text().splitlines()
    (data / "manifest.csv").write_text("\n".join(lines[:21]) + "\n")  # 20 images keep the test quick
    bad = pl.read_csv(data / "manifest.csv", infer_schema=False)["image_path"][4]
    (data / bad).write_bytes(b"\x89PNG broken")
    counts = pack(data / "manifest.csv", tmp_path / "out", size=256, dtype="uint8", shard_mb=1)
    assert counts == {"packed": 19, "quarantined": 1}
    assert len(list((tmp_path / "out" / "shards").glob("*.parquet"))) > 1  # several ~1 MB shards
    q = pl.read_csv(tmp_path / "out" / "quarantine.csv")
    assert q["row"].to_list() == [5] and bad in q["reason"][0]
    manifest = load_manifest(data / "manifest.csv").filter(pl.col("row") != 5)
    got = {int(r["row"]): np.asarray(r["image"]) for r in read_shards(tmp_path / "out").iter_rows()}
    assert sorted(got) == manifest["row"].to_list()
    for r in manifest.iter_rows(named=True):
        assert np.abs(got[r["row"]] - read_image(r["image_path"])).max() <= 0.5 / 255 + 1e-6, r["image_path"]


def test_uint16_shards_keep_12_bit_detail(tmp_path, ray_local):
    from cxrray.data.pack import pack, read_shards
    from cxrray.data.phantom import write_phantom

    manifest = write_phantom(tmp_path / "ph", n_patients=6, seed=2, size=64)
    pack(manifest, tmp_path / "out16", size=64, dtype="uint16")
    df = load_manifest(manifest)
    got = {int(r["row"]): np.asarray(r["image"]) for r in read_shards(tmp_path / "out16").iter_rows()}
    for r in df.iter_rows(named=True):
        assert np.abs(got[r["row"]] - read_image(r["image_path"])).max() <= 0.5 / 65535 + 1e-7


def test_ray_data_path_gives_the_in_memory_tensors(tmp_path, phantom_manifest, ray_local):
    """Same seed, same rows: shards -> Ray Data -> augmentation + representation equals the same ops
    on images decoded straight from the files (up to uint16 storage)."""
    import torch

    from cxrray.data.images import read_mask, resize_mask
    from cxrray.representations.augment import AugmentConfig
    from cxrray.training.loop import InputPipeline

    manifest = assign_splits(load_manifest(phantom_manifest), seed=0)
    result = ingest(manifest, tmp_path / "shards", image_size=48)
    pipe = InputPipeline("lungs_boxed_out", augment=AugmentConfig())
    ds = read_split(result.split_dir("train"))
    batch = next(iter(ds.iter_batches(batch_size=16, batch_format="numpy")))
    by_row = {r["row"]: r for r in manifest.iter_rows(named=True)}
    memory = {"image": np.stack([resize(read_image(by_row[int(i)]["image_path"]), 48) for i in batch["row"]]),
              "mask": np.stack([resize_mask(read_mask(by_row[int(i)]["mask_path"]), 48) for i in batch["row"]])}
    a = pipe.to_inputs(batch, torch.device("cpu"), torch.Generator().manual_seed(5))
    b = pipe.to_inputs(memory, torch.device("cpu"), torch.Generator().manual_seed(5))
    assert a.shape == (16, 1, 48, 48)
    assert torch.allclose(a, b, atol=1e-3)
    assert np.array_equal(batch["mask"], memory["mask"])


def test_two_ingests_give_the_same_row_order(tmp_path, phantom_manifest, ray_local):
    """Shards are written in manifest-row order, so a seeded shuffle (and so training) starts from the same
    sequence on every ingest of the same manifest, whatever the rows per task (the default's 128 at 32 px, or 5:
    the same shard files, row for row and pixel for pixel, and the same data identity)."""
    from cxrray.data.ingest import block_rows
    from cxrray.data.shards import read_split_local

    assert [block_rows(s) for s in (32, 128, 224, 256, 512, 2048)] == [128, 128, 41, 32, 16, 16]
    manifest = assign_splits(load_manifest(phantom_manifest), seed=0)
    orders, results = [], []
    for k, rows in enumerate((None, 5)):
        results.append(ingest(manifest, tmp_path / f"s{k}", image_size=32, rows_per_block=rows))
        ds = read_split(results[-1].split_dir("train"))
        orders.append([int(r) for b in ds.iter_batches(batch_size=64, batch_format="numpy") for r in b["row"]])
    assert orders[0] == orders[1] == sorted(orders[0])
    assert results[0].content == results[1].content and results[0].counts == results[1].counts
    a, b = (read_split_local(r.split_dir("test")) for r in results)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["row"], b["row"])


def test_a_small_split_is_decoded_once_for_a_ray_train_fit_and_a_large_one_streams(tmp_path, phantom_manifest,
                                                                                    ray_local):
    """A Ray Train fit reads a split that fits the budget decoded once (no epoch pays the streaming start-up),
    one over it streamed every epoch; both give the same images in the same order."""
    from ray.data.dataset import MaterializedDataset

    from cxrray.data.shards import decoded_bytes, train_split

    manifest = assign_splits(load_manifest(phantom_manifest), seed=0)
    result = ingest(manifest, tmp_path / "shards", image_size=32)
    split = result.split_dir("train")
    rows = result.counts["train"]
    assert decoded_bytes(split) == rows * 32 * 32 * 5
    kept, streamed = train_split(split), train_split(split, budget=decoded_bytes(split) - 1)
    assert isinstance(kept, MaterializedDataset) and not isinstance(streamed, MaterializedDataset)
    first = [next(iter(ds.iter_batches(batch_size=rows, batch_format="numpy"))) for ds in (kept, streamed)]
    assert np.array_equal(first[0]["row"], first[1]["row"]) and np.array_equal(first[0]["image"], first[1]["image"])


def test_within_label_source_probe_separates_the_hospital_from_the_label(tmp_path, ray_local):
    """Known answers on the phantom: under the full confound the hospital is the label (the within-label probe
    cannot be estimated and says so; the label probe reads what the source probe reads); without the confound
    every label has several hospitals and the within-label probe is estimated per label."""
    from cxrray.data.phantom import write_phantom
    from cxrray.explain.probe import probes

    found = {}
    for confound in (1.0, 0.0):
        m = write_phantom(tmp_path / f"c{confound}", n_patients=60, seed=5, confound=confound)
        ingest(assign_splits(load_manifest(m), seed=0), tmp_path / f"s{confound}", image_size=32)
        found[confound] = probes(tmp_path / f"s{confound}", ["original", "lungs_removed"])
    on, off = found[1.0], found[0.0]
    within_on = on.filter(pl.col("probe") == "source within label")
    assert within_on.height == 2 and within_on["note"].str.starts_with("cannot be estimated").all()
    assert within_on["balanced_accuracy"].is_nan().all()
    label_on = on.filter((pl.col("probe") == "label") & (pl.col("representation") == "lungs_removed"))
    source_on = on.filter((pl.col("probe") == "source") & (pl.col("representation") == "lungs_removed"))
    assert label_on["balanced_accuracy"][0] > 0.8 and source_on["balanced_accuracy"][0] > 0.8
    within_off = off.filter(pl.col("probe").str.starts_with("source within "))
    assert within_off.height >= 2 and (within_off["note"] == "").all()
    removed = within_off.filter(pl.col("representation") == "lungs_removed")
    assert (removed["balanced_accuracy"] > removed["chance"]).all()  # the hospital shows outside the lungs


def test_the_ingest_runs_without_ray_datas_operator_reservation_and_restores_the_context(tmp_path, phantom_manifest,
                                                                                         ray_local, monkeypatch):
    """With its per-operator reservation (half the budget) Ray Data ran one ingest task at a time on 2 CPUs
    (bench/scale.py: 248 -> about 430 images/s per CPU without it); the ingest turns it off for its own stream
    only: the caller's setting is back afterwards, on success and on failure."""
    import ray.data

    from cxrray.data import shards

    ctx = ray.data.DataContext.get_current()
    seen, stream = [], shards.stream_manifest

    def spy(*args, **kwargs):
        seen.append((ctx.op_resource_reservation_enabled, ctx.execution_options.preserve_order))
        return stream(*args, **kwargs)

    monkeypatch.setattr(shards, "stream_manifest", spy)
    manifest = assign_splits(load_manifest(phantom_manifest), seed=0)
    assert ctx.op_resource_reservation_enabled is True
    result = ingest(manifest, tmp_path / "s", image_size=32)
    assert seen == [(False, True)] and sum(result.counts.values()) == manifest.height - result.bad_rows.height > 0
    assert ctx.op_resource_reservation_enabled is True
    monkeypatch.setattr(shards, "stream_manifest", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        ingest(manifest, tmp_path / "t", image_size=32)
    assert ctx.op_resource_reservation_enabled is True
