"""What the quarantine makes untrainable is refused before any trial (issue 37, item 3).

A class that the quarantine empties from a split is the same mistake as a class missing from the manifest: both
stop the run in one line that counts the rows lost per reason and says how to fix it. Rows without a lung mask are
known before Ray starts (the real fixture: 46 of 111 images masked, every one of them COVID-19); rows the ingest
finds unreadable are checked again on what the shards hold, before any trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import REAL_MINI

from cxrray.data.checks import check_what_is_left, reason_kind
from cxrray.registry import UserError

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}


def test_the_partly_masked_real_fixture_stops_before_ray_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--manifest", str(REAL_MINI),
                           "--out", str(tmp_path / "run"), "--representations", "original", "lungs_removed",
                           "--backbones", "basecnn", "--image-size", "32", "--epochs", "1", "--wandb", "disabled"],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hide_seek.py: error: {REAL_MINI}: before the ingest, the train split holds no "
                               f"patient of class NCV (65 of 111 rows left out: 65 no lung mask); nothing was "
                               f"trained. To fix: fill the missing lung masks with the lung U-Net in this command "
                               f"(--mask-unet UNET), or first with `cxrray segment fill")
    assert "Traceback" not in proc.stderr and "ingesting" not in proc.stdout
    assert not (tmp_path / "run" / "shards").exists() and not (tmp_path / "run" / "ray").exists()


@pytest.mark.parametrize(("reason", "kind"), [
    ("row 7: /data/a b/x.png: no lung mask (mask_path is empty)", "no lung mask"),
    ("row 12: img/y.dcm: unreadable image (InvalidDicomError: no preamble)", "unreadable image"),
    ("row 3: m/z.png: implausible lung mask: covers 71 % of the image", "implausible lung mask"),
    ("row 9: masks/q.png: lung Dice 0.612 with the U-Net's lungs of images/q.png (below 0.85): the mask may "
     "belong to another image", "mask disputed by the U-Net"),
    ("row 4: images/w.png: file not found", "file not found"),
])
def test_rows_lost_are_counted_per_kind_of_reason(reason, kind):
    assert reason_kind(reason) == kind


def _rows(per_split: dict[str, tuple[int, int]]) -> pl.DataFrame:
    """Rows of CL2 with ``split``: per split (positive, negative) patients, one image each."""
    rows = [{"patient_id": f"{s}-{c}-{k}", "label": c, "split": s} for s, (pos, neg) in per_split.items()
            for c, n in (("CVP", pos), ("NOR", neg)) for k in range(n)]
    return pl.DataFrame(rows).with_columns(pl.int_range(1, len(rows) + 1).alias("row"))


def test_a_class_the_ingest_emptied_from_a_split_stops_in_one_line():
    rows = _rows({"train": (3, 3), "val": (1, 1), "test": (2, 2)})
    test_pos = rows.filter((pl.col("split") == "test") & (pl.col("label") == "CVP"))
    lost = test_pos.select(pl.format("row {}: images/{}.png: unreadable image (OSError: truncated)", "row",
                                     "patient_id").alias("reason"))
    kept = rows.filter(~pl.col("row").is_in(test_pos["row"].implode()))
    with pytest.raises(UserError) as err:
        check_what_is_left(kept, lost, "CL2", "m.csv")
    assert str(err.value) == ("m.csv: after the ingest, the test split holds no patient of class CVP (2 of 12 rows "
                              "left out: 2 unreadable image); nothing was trained. To fix: the rows left out and "
                              "why are listed above")
    check_what_is_left(kept, lost.head(0), "CL2", "m.csv")  # nothing lost: nothing to say
    check_what_is_left(rows.filter(pl.col("row") != test_pos["row"][0]), lost.head(1), "CL2", "m.csv")  # one left


def test_the_ingest_result_is_checked_before_any_trial(tmp_path, ray_local):
    """Every positive image of the phantom's test split exists but cannot be read: the manifest checks pass, the
    ingest quarantines them, and prepare_data stops in one line before a trial could train on one class."""
    from cxrray.data.checks import check_task_data
    from cxrray.data.manifest import read_manifest
    from cxrray.data.phantom import write_phantom
    from cxrray.tuning.prepare import prepare_data

    manifest = write_phantom(tmp_path / "data", n_patients=24, seed=2)
    rows, _ = read_manifest(manifest)
    split = check_task_data(rows, "CL2", manifest)
    victims = split.filter((pl.col("split") == "test") & (pl.col("label") == "CVP"))
    for path in victims["image_path"]:
        Path(path).write_bytes(b"not an image")
    with pytest.raises(UserError) as err:
        prepare_data(manifest, tmp_path / "run", image_size=32, task="CL2")
    said = str(err.value)
    assert said.startswith(f"{manifest}: after the ingest, the test split holds no patient of class CVP "
                           f"({victims.height} of {split.height} rows left out: {victims.height} unreadable image)")
    assert not (tmp_path / "run" / "splits.csv").exists()  # nothing describes a split that will not train
