"""The reporting-guideline section (issue 30, item 1): every CLAIM 2024 item once, TRIPOD+AI items beside them,
each answered from the run's own files (flow, partitions, demographics, which analyses ran) or left to the
authors, and the Markdown export that a submission attaches."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from cxrray.analysis.checklist import AUTHORS, ITEMS, RUN, demographics


def _items(guideline: str) -> list[int]:
    out = []
    for g, item, _, _ in ITEMS:
        if g == guideline:
            lo, _, hi = item.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    return out


def test_every_claim_item_appears_once_and_tripod_items_are_numbered_as_the_guideline():
    assert sorted(_items("CLAIM 2024")) == list(range(1, 43))  # 42 items, none twice, none missing
    tripod = [item for g, item, _, _ in ITEMS if g == "TRIPOD+AI"]
    assert all(re.fullmatch(r"([1-9]|1[0-9]|2[0-7])[a-g]?", i) for i in tripod) and len(set(tripod)) == len(tripod)


def test_demographics_count_patients_not_images():
    splits = pl.DataFrame({"patient_id": ["a", "a", "b", "c", "d"], "sex": ["F", "F", "M", "F", "M"],
                           "age": ["30", "30", "50", "70", "90"], "split": ["train", "train", "train", "test", "test"]})
    table = demographics(splits)
    assert table["split"].to_list() == ["train", "test"]  # protocol order
    train = table.row(0, named=True)
    assert (train["patients"], train["images"], train["female %"], train["age median"]) == (2, 3, 50.0, 40.0)
    assert demographics(splits.drop("sex", "age")).is_empty()


def _run(tmp_path, sex: bool = True) -> None:
    """A stored run (two trials) with the files a sweep writes beside them: splits, quarantine, study."""
    from test_dilation import _stored

    _stored(tmp_path, {("original", 0): 3.0, ("lungs_removed", 0): 0.5})
    rng = np.random.default_rng(1)
    n = 40
    splits = pl.DataFrame({"row": np.arange(1, n + 1), "patient_id": [f"p{i // 2}" for i in range(n)],
                           "label": "NOR", "source": "a", "split": ["train"] * 24 + ["val"] * 8 + ["test"] * 8})
    if sex:
        splits = splits.with_columns(pl.Series("sex", np.where(np.arange(n) % 4 < 2, "F", "M")),
                                     pl.Series("age", rng.integers(20, 80, n).astype(str)))
    splits.write_csv(tmp_path / "splits.csv")
    pl.DataFrame({"row": [41, 42], "image_path": ["x.png", "y.png"],
                  "reason": ["row 41: x.png: unreadable image", "row 42: y.png: unreadable image"]}).write_csv(
        tmp_path / "quarantine.csv")
    (tmp_path / "study.yaml").write_text("study: hide_seek\nsplit_seed: 3\nrecipe: demo\nepochs: 8\n")


def test_the_checklist_is_filled_from_the_run_and_exported(tmp_path):
    from cxrray.analysis.analyze import run_analysis

    _run(tmp_path)
    result = run_analysis(tmp_path, )
    table = result.artifacts["checklist"].tables["checklist"]
    assert table.height == len(ITEMS)
    row = {(r["guideline"], r["item"]): r for r in table.iter_rows(named=True)}
    flow = row[("CLAIM 2024", "33")]["where this run answers it"]
    assert flow.startswith("42 manifest rows -> 2 left out") and "40 split by patient" in flow
    parts = row[("CLAIM 2024", "20-21")]["where this run answers it"]
    assert "seed 3" in parts and "train 12 patients / 24 images, val 4 patients / 8 images" in parts
    assert "0 patient(s) in two splits" in parts
    assert "unreadable image (2)" in row[("CLAIM 2024", "8")]["where this run answers it"]
    demo = row[("CLAIM 2024", "34")]
    assert demo["answered by"] == RUN and "train 12 patients, 50 % female" in demo["where this run answers it"]
    assert row[("CLAIM 2024", "42")]["answered by"] == AUTHORS
    assert row[("CLAIM 2024", "31")]["answered by"] == AUTHORS  # no saved models here: saliency made nothing
    assert "calibration" in row[("CLAIM 2024", "30")]["where this run answers it"]
    assert "seeds or folds" not in row[("CLAIM 2024", "30")]["where this run answers it"]  # one seed
    md = (tmp_path / "analysis" / "checklist.md").read_text().splitlines()
    assert md[0].startswith("| guideline | item | topic | answered by |") and len(md) == 2 + len(ITEMS)
    assert "Reporting checklist (CLAIM 2024, TRIPOD+AI" in result.text
    assert "Reporting checklist: CLAIM 2024 and TRIPOD+AI" in (tmp_path / "report.html").read_text()


def test_without_demographics_the_authors_are_asked_for_them(tmp_path):
    from cxrray.analysis.analyze import run_analysis

    _run(tmp_path, sex=False)
    table = run_analysis(tmp_path).artifacts["checklist"].tables["checklist"]
    demo = table.filter((pl.col("guideline") == "CLAIM 2024") & (pl.col("item") == "34")).row(0, named=True)
    assert demo["answered by"] != RUN and "no sex or age" in demo["where this run answers it"]


def test_manifest_text_in_the_markdown_export_is_escaped():
    """A quarantine reason quotes the manifest's value: raw ``<script>`` in checklist.md ran in a Markdown viewer
    (issue 42); the report was already escaped."""
    from cxrray.analysis.checklist import markdown

    table = pl.DataFrame({"guideline": ["CLAIM 2024"], "item": ["8"], "topic": ["data"], "answered by": [RUN],
                          "where this run answers it": ["unknown sex '<script>alert(1)</script>' (1) | a & b"]})
    row = markdown(table).splitlines()[2]
    assert row == ("| CLAIM 2024 | 8 | data | " + RUN + " | unknown sex '&lt;script&gt;alert(1)&lt;/script&gt;' (1) "
                   "/ a &amp; b |")
