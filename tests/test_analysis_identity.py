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


def test_every_table_of_the_demo_run_is_unchanged(smoke_run, tmp_path):
    golden = json.loads(GOLDEN.read_text())["demo"]
    got = digests(_demo(smoke_run[0], tmp_path / "demo"))
    assert sorted(got) == sorted(golden), "the set of tables changed"
    assert [t for t in golden if got[t] != golden[t]] == []


if __name__ == "__main__":  # --record [DEMO_RUN]: record the known-answer runs (and a smoke demo's tables)
    import tempfile

    assert sys.argv[1] == "--record", "usage: test_analysis_identity.py --record [SMOKE_RUN_DIR]"
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            recorded[name] = digests(_known_answer(Path(tmp) / name, name))
        if len(sys.argv) > 2:
            recorded["demo"] = digests(_demo(Path(sys.argv[2]), Path(tmp) / "demo"))
    GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
