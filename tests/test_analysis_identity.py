"""The analysis gives the same tables as the house it was rebuilt from: every CSV the steps write, on the
known-answer runs and the demo run, is compared with the digests recorded before the analysis package was split
into ``stats`` / ``verdicts`` / ``explain`` / ``plots`` / ``analysis`` / ``report``
(``fixtures/analysis_identity.json``).

Numbers are compared to 9 significant digits (the last bits of a float sum may differ between BLAS builds); the
run folder's own path is written as ``RUN`` and the commit the sweep ran on (the checklist's code item) as
``COMMIT``. A table that legitimately changes is re-recorded with
``python tests/test_analysis_identity.py --record`` and the change said in CHANGELOG.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from edge_runs import Edge, write_edge_run
from test_analysis_stats import _run

from cxrray.analysis.analyze import run_analysis
from cxrray.analysis.steps import AnalysisOptions

GOLDEN = Path(__file__).parent / "fixtures" / "analysis_identity.json"
DEMO_TABLES = Path(__file__).parent / "fixtures" / "analysis_identity_demo"  # the weight-dependent tables, stored
WEIGHTS = ("calibration.csv", "saliency_in_lungs.csv", "saliency_per_image.csv")
NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")
COMMIT = re.compile(r"cxrray commit [0-9a-f]{7,40}(\+dirty)?")
PLANTED = {"lungs_removed": 2.0, "original": 3.0, "lungs_boxed_out": 0.0, "lungs_isolated": 2.5}
NULL = {"original": 3.0, "lungs_removed": 0.0, "lungs_isolated": 3.0}
EDGES = {"edge_full": Edge(dilation=True, short=True, seeds=2, backbones=("basecnn", "resnet18"), failed=True),
         "edge_cl3": Edge(task="CL3", images=3, pos=5, neg=7, seed=11)}


def digests(run: Path) -> dict[str, str]:
    """Table path under ``analysis/`` -> sha256 of its text, numbers rounded to 9 significant digits."""
    out = {}
    for path in sorted((run / "analysis").rglob("*.csv")):
        text = COMMIT.sub("cxrray commit COMMIT", path.read_text().replace(str(run), "RUN"))
        text = NUMBER.sub(lambda m: f"{float(m.group()):.9g}", text)
        out[path.relative_to(run / "analysis").as_posix()] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def _known_answer(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if name in EDGES:
        write_edge_run(root, EDGES[name])
        run_analysis(root, AnalysisOptions(saliency=2))
    else:
        _run(root, PLANTED if name == "planted" else NULL, n=400, seed=5)
        run_analysis(root)
    return root


RUNS = ("planted", "null", *EDGES)


@pytest.mark.parametrize("name", RUNS)
def test_every_table_of_a_known_answer_run_is_unchanged(name, tmp_path):
    golden = json.loads(GOLDEN.read_text())[name]
    got = digests(_known_answer(tmp_path / name, name))
    assert sorted(got) == sorted(golden), "the set of tables changed"
    changed = [t for t in golden if got[t] != golden[t]]
    assert not changed, f"tables whose content changed: {changed}"


def _demo(out: Path, run: Path) -> Path:
    """A copy of the smoke demo's stored trials, models and shards, analysed again (the model-based steps too)."""
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("analysis", "cache", "wandb", "ray", "tmp", "report.html",
                                                             ".cxrray.lock*"))
    run_analysis(run)
    return run


def close_tables(got: Path, want: Path) -> list[str]:
    """What differs between two CSV tables: columns, rows, a text cell, or a number beyond rtol 1e-2 / atol 1e-4."""
    import numpy as np
    import polars as pl

    a, b = (pl.read_csv(p, infer_schema_length=None) for p in (got, want))
    if a.columns != b.columns or a.height != b.height:
        return [f"{got.name}: columns {a.columns} x {a.height} rows, stored {b.columns} x {b.height}"]
    out = []
    for c in a.columns:
        x, y = a[c], b[c]
        if x.dtype.is_numeric() and y.dtype.is_numeric():
            if not np.allclose(x.to_numpy().astype(float), y.to_numpy().astype(float), rtol=1e-2, atol=1e-4,
                               equal_nan=True):
                out.append(f"{got.name}: column {c} differs beyond 1e-2")
        elif x.cast(pl.Utf8).to_list() != y.cast(pl.Utf8).to_list():
            out.append(f"{got.name}: column {c} text differs")
    return out


def test_every_table_of_the_demo_run_is_unchanged(smoke_run, tmp_path):
    """Every table by digest, except those whose numbers come from the trained models' exact weights
    (``WEIGHTS``): a CPU with other SIMD kernels sums the training's floats in another order, and these move in
    the 7th digit while every AUROC, rank and verdict stays; they are compared with stored copies to 1e-2."""
    golden = json.loads(GOLDEN.read_text())["demo"]
    run = _demo(smoke_run[0], tmp_path / "demo")
    got = digests(run)
    assert sorted(got) == sorted(golden), "the set of tables changed"
    assert [t for t in golden if t not in WEIGHTS and got[t] != golden[t]] == []
    for table in WEIGHTS:
        mine = tmp_path / table
        mine.write_text((run / "analysis" / table).read_text().replace(str(run), "RUN"))
        assert close_tables(mine, DEMO_TABLES / table) == []


def test_the_tolerant_comparison_sees_a_changed_number_and_a_changed_word(tmp_path):
    stored = DEMO_TABLES / "calibration.csv"
    text = stored.read_text()
    (tmp_path / "same.csv").write_text(text)
    assert close_tables(tmp_path / "same.csv", stored) == []
    lines = text.splitlines()
    first = lines[1].split(",")
    first[7] = str(float(first[7]) * 1.05 + 0.01)  # ece, 5 % off
    (tmp_path / "number.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    assert close_tables(tmp_path / "number.csv", stored) == ["number.csv: column ece differs beyond 1e-2"]
    (tmp_path / "word.csv").write_text(text.replace("consistent with calibration", "miscalibrated", 1))
    assert close_tables(tmp_path / "word.csv", stored) == ["word.csv: column verdict text differs"]


if __name__ == "__main__":  # --record [DEMO_RUN]: record the known-answer runs (and a smoke demo's tables)
    import tempfile

    assert sys.argv[1] == "--record", "usage: test_analysis_identity.py --record [SMOKE_RUN_DIR]"
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            recorded[name] = digests(_known_answer(Path(tmp) / name, name))
        if len(sys.argv) > 2:
            demo = _demo(Path(sys.argv[2]), Path(tmp) / "demo")
            recorded["demo"] = digests(demo)
            DEMO_TABLES.mkdir(exist_ok=True)
            for table in WEIGHTS:
                (DEMO_TABLES / table).write_text((demo / "analysis" / table).read_text().replace(str(demo), "RUN"))
    GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
