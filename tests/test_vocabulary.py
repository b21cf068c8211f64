"""Every column a fairness analysis groups by is a checked vocabulary (issue 42, items 1 and 3).

``female``, ``Female`` and ``F`` are one sex; ``2`` is female in one collection and male in another, so it is
quarantined with its value and row, as are an implausible age, an unknown view and a header that names a column
twice. ShorT on data with one sex is refused before any trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from cxrray.data.manifest import ManifestError, read_manifest

ROOT = Path(__file__).resolve().parents[1]
HEADER = "image_path,mask_path,patient_id,source,label,severity,view,sex,age\n"


def _manifest(tmp_path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    text = HEADER + "".join(f"i{k}.png,,p{k},{src},CVP,,{view},{sex},{age}\n"
                            for k, (sex, view, age, src) in enumerate(rows))
    (tmp_path / "m.csv").write_text(text)
    return tmp_path / "m.csv"


def test_spellings_become_one_value_and_the_rest_is_quarantined_with_its_value(tmp_path):
    path = _manifest(tmp_path, [("female", "PA", "40", "HospA"), ("Female", "ap supine", "50", " hospa "),
                                ("2", "AP", "60", "B"), ("male", "AP_horizontal", "61", "B"), ("1", "", "33", "B"),
                                ("F", "Lat", "", "B"), ("M", "oblique", "20", "B"), ("u", "PA", "130", "B"),
                                ("other", "frontal", "0.5", "B")])
    rows, quarantine = read_manifest(path)
    assert rows.select("row", "sex", "view", "source").rows() == [
        (1, "F", "PA", "HospA"), (2, "F", "AP SUPINE", "HospA"), (4, "M", "AP SUPINE", "B"),
        (6, "F", "LATERAL", "B"), (9, "O", "FRONTAL", "B")]
    assert [r.split(": ", 1)[1] for r in quarantine["reason"]] == [
        "unknown sex '2' (valid: F / female, M / male, O / other, empty or U / unknown; a numeric code means "
        "female in one collection and male in another)",
        "unknown sex '1' (valid: F / female, M / male, O / other, empty or U / unknown; a numeric code means "
        "female in one collection and male in another)",
        "unknown view 'oblique' (valid: PA, AP, AP supine, frontal, lateral, or empty)",
        "implausible age '130' (years, 0 to 120)"]
    assert quarantine["row"].to_list() == [3, 5, 7, 8]
    assert all(r.startswith(f"{path}, row ") for r in quarantine["reason"])


def test_a_column_named_twice_is_refused_naming_it(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER.replace("label,", "label,label,") + "a.png,,p1,s,CVP,NOR,,PA,F,40\n")
    with pytest.raises(ManifestError, match="column 'label' appears more than once in the header; keep one"):
        read_manifest(path)


def test_demographics_count_women_among_the_recorded(tmp_path):
    from cxrray.analysis.checklist import demographics

    splits = pl.DataFrame({"patient_id": ["a", "b", "c", "d", "e"], "sex": ["F", "F", "M", "", "O"],
                           "age": ["40", "50", "60", "", "70"], "split": ["train"] * 5})
    row = demographics(splits).row(0, named=True)
    assert (row["patients"], row["female %"], row["sex unknown"]) == (5, 50.0, 1)  # 2 of the 4 recorded


def test_short_on_one_sex_is_refused_before_ray(tmp_path):
    from cxrray.data.phantom import write_phantom

    manifest = write_phantom(tmp_path / "data", n_patients=20, seed=1)
    pl.read_csv(manifest, infer_schema=False).with_columns(pl.lit("F").alias("sex")).write_csv(manifest)
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--manifest", str(manifest),
                           "--out", str(tmp_path / "run"), "--methods", "short_sex", "--seeds", "0", "1",
                           "--backbones", "basecnn", "--wandb", "disabled"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"hide_seek.py: error: {manifest}: method short_sex cannot be estimated on this data: sex needs two "
        f"values with at least 5 patients each; the manifest has M 0, F 20 (patients); drop it from --methods"]
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder, no study.yaml
