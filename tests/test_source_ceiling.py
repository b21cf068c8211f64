"""The source-only ceiling (issue 30, item 3), known answers on the phantom: with every class from its own
hospital the hospital alone reaches AUROC 1; with hospitals independent of the class it stays at chance. Labels
and columns only, so no training: the phantom's manifest split by patient stands in for a run's predictions."""

import polars as pl
import pytest

from cxrray.analysis.source_ceiling import source_ceilings, used_columns
from cxrray.data.manifest import load_manifest
from cxrray.data.phantom import write_phantom
from cxrray.data.splits import assign_splits
from cxrray.data.tasks import TASKS


def _stored(tmp_path, confound: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A run's predictions (val and test rows of one trial) and its analysed trials, from a phantom."""
    task = TASKS.get("CL2")
    rows = assign_splits(task.rows_of(load_manifest(write_phantom(tmp_path / f"p{confound}-{seed}", n_patients=160,
                                                                  confound=confound, seed=seed))), seed=seed)
    rows = rows.filter(pl.col("split") != "train").with_columns(
        pl.col("label").map_elements(task.class_index, return_dtype=pl.Int64).alias("target"))
    predictions = pl.concat([rows.with_columns(pl.lit(t).alias("trial_id")) for t in ("t0", "t1")])
    aurocs = pl.DataFrame({"trial_id": ["t0", "t1"], "study": "hide_seek", "task": "CL2", "design": "random",
                           "fold": 0, "representation": ["original", "lungs_removed"], "auroc": [0.99, 0.97]})
    return predictions, aurocs


def test_the_hospital_alone_reaches_auroc_1_when_each_class_has_its_own(tmp_path):
    predictions, aurocs = _stored(tmp_path, 1.0, 0)
    table = source_ceilings(predictions, aurocs)
    r = table.row(0, named=True)
    assert table.height == 1 and r["columns"].startswith("source")
    assert r["auroc"] == 1.0 and r["ci_lo"] > 0.75
    assert (r["hidden_auroc_min"], r["hidden_auroc_max"]) == (0.97, 0.97)  # the lung-hiding trial beside it


@pytest.mark.parametrize("seed", range(5))
def test_it_stays_at_chance_when_hospitals_are_independent_of_the_class(tmp_path, seed):
    predictions, aurocs = _stored(tmp_path, 0.0, seed)
    r = source_ceilings(predictions, aurocs).row(0, named=True)
    assert r["ci_lo"] < 0.5 < r["ci_hi"], r  # no claim of a source shortcut where none was planted
    assert abs(r["auroc"] - 0.5) < 0.2


def test_only_varying_acquisition_columns_are_used():
    frame = pl.DataFrame({"source": ["a", "b"], "view": ["PA", "PA"], "device": [None, None]})
    assert used_columns(frame) == ["source"]
    assert used_columns(frame.with_columns(pl.Series("view", ["PA", "AP"]))) == ["source", "view"]
