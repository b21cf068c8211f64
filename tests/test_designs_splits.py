"""Dataset designs and split variants on a manifest with known sources."""

import polars as pl
import pytest

from cxrray.data.designs import DESIGNS, DesignError, independent, leave_out_sources, multiple, single
from cxrray.data.splits import HOLDOUT_PRESETS, assign_splits, kfold_splits
from cxrray.data.tasks import TASKS


def _manifest(layout: dict[tuple[str, str], int]) -> pl.DataFrame:
    """layout: (label, source) -> number of patients (2 images each)."""
    rows = []
    for (label, source), n in layout.items():
        for p in range(n):
            for k in range(2):
                rows.append({"row": len(rows) + 1, "image_path": f"{source}/{label}{p}_{k}.png",
                             "patient_id": f"{source}-{label}-{p}", "source": source, "label": label})
    return pl.DataFrame(rows)


MIXED = _manifest({("NOR", "a"): 20, ("NOR", "b"): 10, ("CVP", "b"): 15, ("CVP", "c"): 12,
                   ("OBP", "a"): 8, ("OVP", "c"): 6})
CL2 = TASKS.get("CL2")


def test_designs_registry():
    assert DESIGNS.names() == ["independent", "multiple", "single"]


def test_single_gives_each_class_its_own_source():
    out = single(MIXED, CL2, seed=0)
    per = out.with_columns(pl.col("label").replace_strict({"NOR": "NCV", "OBP": "NCV", "OVP": "NCV",
                                                           "CVP": "CVP"}).alias("c")) \
        .group_by("c").agg(pl.col("source").unique())
    sources = {r["c"]: r["source"] for r in per.iter_rows(named=True)}
    assert all(len(v) == 1 for v in sources.values())
    assert sources["NCV"] != sources["CVP"]


def test_single_impossible_is_explained():
    one_source = _manifest({("NOR", "a"): 5, ("CVP", "a"): 5})
    with pytest.raises(DesignError, match=r"class .* has only source\(s\) \['a'\]"):
        single(one_source, CL2)


def test_multiple_mixes_sources_in_every_split():
    out = multiple(MIXED, CL2, seed=1)
    for split in ("train", "test"):
        part = out.filter((pl.col("split") == split) & (pl.col("label") == "CVP"))
        assert set(part["source"]) == {"b", "c"}
    with pytest.raises(DesignError, match=r"too few for .*CVP.*\['b'\]"):
        multiple(_manifest({("NOR", "a"): 5, ("NOR", "b"): 5, ("CVP", "b"): 5}), CL2)


def test_independent_tests_on_unseen_sources():
    out = independent(MIXED, CL2, test_sources=["c"], seed=0)
    assert set(out.filter(pl.col("split") == "test")["source"]) == {"c"}
    assert "c" not in set(out.filter(pl.col("split") != "test")["source"])
    with pytest.raises(DesignError, match="missing from the test sources"):
        independent(MIXED, CL2, test_sources=["a"])  # source a has no COVID
    with pytest.raises(DesignError, match="needs test_sources from \\['a', 'b', 'c'\\]"):
        independent(MIXED, CL2, test_sources=["zz"])
    assert [s for s, _ in leave_out_sources(MIXED, CL2)] == ["b", "c"]


@pytest.mark.parametrize("preset", sorted(HOLDOUT_PRESETS))
def test_holdout_presets(preset):
    fr = HOLDOUT_PRESETS[preset]
    out = assign_splits(MIXED, fr, seed=0)
    patients = out.unique("patient_id")
    shares = [patients.filter(pl.col("split") == s).height / patients.height
              for s in ("train", "val", "test")[:len(fr)]]
    assert all(abs(a - b) < 0.08 for a, b in zip(shares, fr, strict=True))


def test_stratify_by_source_balances_sources():
    out = assign_splits(MIXED, (0.5, 0.5), seed=0, stratify=("label", "source"))
    for src in ("a", "b", "c"):
        counts = out.filter(pl.col("source") == src).group_by("split").len()
        assert counts.height == 2


def test_repeated_kfold_every_patient_tested_once_per_repeat():
    folds = list(kfold_splits(MIXED, k=5, repeats=2, seed=0))
    assert len(folds) == 10
    for rep in range(2):
        tested = [pid for r, f, d in folds if r == rep
                  for pid in d.filter(pl.col("split") == "test")["patient_id"].unique().to_list()]
        assert sorted(tested) == sorted(MIXED["patient_id"].unique().to_list())
    a = folds[0][2].filter(pl.col("split") == "test")["patient_id"].to_list()
    b = folds[5][2].filter(pl.col("split") == "test")["patient_id"].to_list()
    assert a != b  # repeats reshuffle
    assert set(folds[0][2]["split"]) == {"train", "val", "test"}
