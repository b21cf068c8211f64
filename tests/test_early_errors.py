"""User errors found before Ray starts, in one line, exit 2 (issue 19, item 6): each case below once trained for
minutes, started Ray on nothing, printed a traceback or read the wrong folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}


def _phantom(tmp_path: Path) -> Path:
    from cxrray.data.phantom import write_phantom

    return write_phantom(tmp_path / "data", n_patients=20, seed=1)


def _one_class(tmp_path):
    m = _phantom(tmp_path)
    pl.read_csv(m, infer_schema=False).filter(pl.col("label") != "CVP").write_csv(m)
    return ["--manifest", str(m)], "task CL2 needs every class of ['NCV', 'CVP']; no row of ['CVP'] (labels ['CVP'])"


def _three_patients(tmp_path):
    m = _phantom(tmp_path)
    df = pl.read_csv(m, infer_schema=False)
    keep = sorted(set(df.filter(pl.col("label") == "CVP")["patient_id"]))[:1] + \
        sorted(set(df.filter(pl.col("label") != "CVP")["patient_id"]))[:2]
    df.filter(pl.col("patient_id").is_in(keep)).write_csv(m)
    return ["--manifest", str(m)], ("too few patients for the 60/20/20 split: the train split gets no patient "
                                    "of class CVP (a model cannot learn or be scored without it); every class "
                                    "needs at least 5 patients, CVP has 1")


def _all_rows_bad(tmp_path):
    m = _phantom(tmp_path)
    df = pl.read_csv(m, infer_schema=False).with_columns(pl.lit("XYZ").alias("label"))
    df.write_csv(m)
    return ["--manifest", str(m)], f"{m}: no usable row: all {df.height} are left out, the first as {m}, row 1: " \
        "unknown label 'XYZ'"


def _directory_as_manifest(tmp_path):
    m = _phantom(tmp_path)
    return ["--manifest", str(m.parent)], f"{m.parent}: is a directory; give the manifest file itself"


def _unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return ["--out", str(blocker / "run")], f"--out {blocker / 'run'} cannot be written: Not a directory"


def _negative_image_size(tmp_path):
    return ["--image-size", "-32"], "--image-size -32 is out of range: [16, 4096] (px)"


def _huge_image_size(tmp_path):
    return ["--image-size", "100000"], "--image-size 100000 is out of range: [16, 4096] (px)"


def _too_small_for_the_backbone(tmp_path):
    return ["--image-size", "24", "--backbones", "resnet18"], "--image-size 24 is too small for resnet18 (at least " \
        "32 px)"


def _negative_epochs(tmp_path):
    return ["--epochs", "-1"], "--epochs -1 is out of range: [1, 100000] (epochs)"


def _fractional_epochs_in_a_study_file(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("epochs: 1.5\n")
    return ["--config", str(study)], f"{study}: key 'epochs': 1.5 is not a whole number (the option takes an integer)"


def _every_image_missing(tmp_path):
    m = _phantom(tmp_path)
    for png in (m.parent / "images").glob("*"):
        png.unlink()
    n = pl.read_csv(m, infer_schema=False).height
    return ["--manifest", str(m)], f"{m}: none of the {n} image files exists"


def _wandb_online_without_a_key(tmp_path):
    return ["--wandb", "online"], "--wandb online: no W&B API key (set WANDB_API_KEY or run `wandb login`)"


@pytest.mark.parametrize("case", [_wandb_online_without_a_key, _one_class, _three_patients, _all_rows_bad,
                                  _directory_as_manifest,
                                  _unwritable_out, _negative_image_size, _huge_image_size, _too_small_for_the_backbone,
                                  _negative_epochs, _fractional_epochs_in_a_study_file, _every_image_missing],
                         ids=lambda f: f.__name__.lstrip("_"))
def test_user_errors_stop_before_ray_in_one_line(tmp_path, case):
    extra, expected = case(tmp_path)
    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--wandb", "disabled",
            "--out", str(out), *extra]
    env = {k: v for k, v in ENV.items() if k != "WANDB_API_KEY"} | {"HOME": str(tmp_path)}  # no key, no netrc
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (out / "ray").exists() and not (out / "shards").exists()  # Ray never started, nothing ingested


def test_a_symlink_loop_is_quarantined_with_its_reason(tmp_path):
    """An image path that is a symbolic link loop stopped the whole run with a raw RuntimeError; now that row is
    quarantined naming the path and the loop, and the others go on."""
    from cxrray.data.manifest import read_manifest

    m = _phantom(tmp_path)
    df = pl.read_csv(m, infer_schema=False)
    loop = m.parent / "images" / "loop.png"
    os.symlink(loop, loop)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("images/loop.png"))
                         .otherwise(pl.col("image_path")).alias("image_path"))
    df.write_csv(m)
    rows, quarantine = read_manifest(m)
    assert quarantine["row"].to_list() == [3] and rows.height == df.height - 1
    assert "unreadable path" in quarantine["reason"][0] and "loop.png" in quarantine["reason"][0]
