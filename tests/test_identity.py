"""Content-aware identity (issue 19, items 2, 3 and 5): paths resolved before the duplicate check, the same bytes
under two names or patients quarantined with the row they repeat, a repaired file re-ingested (and a new data
id), moved data keeping its id, and every supplied mask through the plausibility gate."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from cxrray.data.manifest import read_manifest
from cxrray.data.shards import load_batch, read_split_local


def _copy(phantom_manifest, tmp_path, name="data"):
    data = tmp_path / name
    shutil.copytree(phantom_manifest.parent, data)
    return data, pl.read_csv(data / "manifest.csv", infer_schema=False)


def _prepare(manifest, run, capsys, **kw):
    from cxrray.tuning.prepare import prepare_data

    run.mkdir(parents=True, exist_ok=True)
    data = prepare_data(manifest, run, image_size=32, task="CL2", **kw)
    return data, capsys.readouterr().out


def test_paths_are_resolved_before_the_duplicate_check(tmp_path, phantom_manifest):
    data, df = _copy(phantom_manifest, tmp_path)
    first = df["image_path"][0]  # images/<name>
    folder, name = first.rsplit("/", 1)
    os.symlink(data / first, data / folder / f"link-{name}")
    extra = pl.DataFrame([df.row(0, named=True)] * 3).with_columns(
        pl.Series("image_path", [f"./{first}", f"{folder}/../{folder}/{name}", f"{folder}/link-{name}"]),
        pl.Series("patient_id", ["p-x", "p-y", "p-z"]))
    pl.concat([df, extra]).write_csv(data / "manifest.csv")
    rows, quarantine = read_manifest(data / "manifest.csv")
    n = df.height
    assert quarantine["row"].to_list() == [n + 1, n + 2, n + 3]
    assert all(f"duplicate of row 1 (the same file {data / first})" in r for r in quarantine["reason"])
    assert rows.height == n


def _kept_hashes(shard_dir) -> dict[str, list[int]]:
    """split -> the manifest rows kept there."""
    return {s: [int(r) for r in read_split_local(shard_dir / s)["row"]] for s in ("train", "val", "test")}


def test_the_same_bytes_under_other_names_and_patients_are_left_out(tmp_path, phantom_manifest, ray_local, capsys):
    data, df = _copy(phantom_manifest, tmp_path)
    pngs = [i for i, p in enumerate(df["image_path"]) if p.endswith(".png")][:12]
    copies = []
    for k, i in enumerate(pngs):
        src = df.row(i, named=True)
        dst = f"images/copy-{k}.png"
        shutil.copy(data / src["image_path"], data / dst)
        copies.append({**src, "image_path": dst, "patient_id": f"other-{k}"})
    pl.concat([df, pl.DataFrame(copies)]).write_csv(data / "manifest.csv")

    prepared, _ = _prepare(data / "manifest.csv", tmp_path / "run", capsys)
    q = prepared.quarantine
    copy_rows = list(range(df.height + 1, df.height + 13))
    assert q.filter(pl.col("row").is_in(copy_rows))["row"].to_list() == copy_rows
    for k, (i, row) in enumerate(zip(pngs, copy_rows, strict=True)):
        reason = q.filter(pl.col("row") == row)["reason"][0]
        assert f"copy-{k}.png: the same image as row {i + 1} ({data / df['image_path'][i]})" in reason
    kept = _kept_hashes(prepared.shard_dir)
    digests = {}
    rows, _ = read_manifest(data / "manifest.csv")
    path_of = dict(zip(rows["row"].to_list(), rows["image_path"].to_list(), strict=True))
    for split, rs in kept.items():
        for r in rs:
            digest = hashlib.sha256(Path(path_of[r]).read_bytes()).hexdigest()
            assert digest not in digests, f"row {r} ({split}) repeats row {digests.get(digest)}"
            digests[digest] = (r, split)
    assert sum(len(v) for v in kept.values()) == df.height  # every original kept, no copy


def test_a_repaired_file_is_ingested_again_and_moved_data_keeps_its_id(tmp_path, phantom_manifest, ray_local,
                                                                      capsys):
    data, df = _copy(phantom_manifest, tmp_path)
    i = next(i for i, m in enumerate(df["mask_path"]) if m)
    mask_file = data / df["mask_path"][i]
    good = mask_file.read_bytes()
    shape = np.asarray(Image.open(mask_file)).shape
    Image.fromarray(np.zeros(shape, np.uint8)).save(mask_file)  # all black: hides nothing
    run = tmp_path / "run"

    broken, out = _prepare(data / "manifest.csv", run, capsys)
    assert "ingesting" in out
    reason = broken.quarantine.filter(pl.col("row") == i + 1)["reason"][0]
    assert f"{mask_file}: implausible lung mask: empty mask (no lung pixel)" in reason

    mask_file.write_bytes(good)  # repaired in place
    repaired, out = _prepare(data / "manifest.csv", run, capsys)
    assert "reusing" not in out and "ingesting" in out
    assert i + 1 not in repaired.quarantine["row"].to_list()
    assert repaired.data_id != broken.data_id

    again, out = _prepare(data / "manifest.csv", run, capsys)
    assert f"reusing shards {repaired.shard_dir}" in out and again.data_id == repaired.data_id

    moved = tmp_path / "moved"
    shutil.copytree(data, moved)  # new paths, new modification times, the same bytes
    there, out = _prepare(moved / "manifest.csv", run, capsys)
    assert "ingesting" in out and there.data_id == repaired.data_id
    assert _kept_hashes(there.shard_dir) == _kept_hashes(repaired.shard_dir)


def _gate(tmp_path, mask: np.ndarray, check: bool = True) -> str:
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random(mask.shape) * 255).astype(np.uint8)).save(img)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    batch = {"row": np.array([1]), "image_path": np.array([str(img)], dtype=object),
             "mask_path": np.array([str(tmp_path / "mask.png")], dtype=object)}
    return load_batch(batch, 32, require_masks=True, check_masks=check)["error"][0]


def test_supplied_masks_pass_the_same_gate_as_predicted_ones(tmp_path):
    lungs = np.zeros((128, 128), bool)
    lungs[20:100, 18:56] = lungs[20:100, 72:110] = True
    assert _gate(tmp_path, lungs) == ""
    assert _gate(tmp_path, np.zeros((128, 128), bool)).endswith("implausible lung mask: empty mask (no lung pixel)")
    inverted = _gate(tmp_path, ~lungs)
    assert "1 lung region(s) found, expected 2" in inverted and "not inside the body" in inverted
    one = lungs.copy()
    one[:, 56:72] = True
    assert "1 lung region(s) found" in _gate(tmp_path, one)
    speck = np.zeros((128, 128), bool)
    speck[60:64, 30:34] = speck[60:64, 90:94] = True
    assert "lung area 0.2% outside [8%, 60%]" in _gate(tmp_path, speck)
    assert _gate(tmp_path, np.zeros((128, 128), bool), check=False) == ""  # --masks-unchecked
