"""An analysis that never dies whole: every registered step on generated runs at the edges (``edge_runs``), and a
step that raises leaves the other steps' tables, the report and a non-zero exit behind it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from edge_runs import OPTIONAL, Edge, edges, write_edge_run
from hypothesis import HealthCheck, given, settings

from cxrray.analysis.analyze import run_analysis
from cxrray.analysis.steps import ANALYSES, AnalysisOptions, ordered_steps

OPTIONS = AnalysisOptions(saliency=2)  # the model-based steps run too (these runs keep no model: named rows)


def _analysed(root: Path, edge: Edge):
    result = run_analysis(write_edge_run(root, edge), OPTIONS)
    assert not result.failed, [f.line() for f in result.failed]
    assert set(result.artifacts) == {s.name for s in ordered_steps()}  # every step made its artifacts
    return result


NAMED = {  # the edges each step must survive, by name (the generator below adds their combinations)
    "no positive test patient": Edge(pos=0),
    "no negative test patient": Edge(neg=0),
    "one patient per class, one image each": Edge(pos=1, neg=1, images=1),
    "NaN scores": Edge(scores="nan"),
    "constant scores": Edge(scores="constant"),
    "tied scores": Edge(scores="ties"),
    "no optional column": Edge(columns=tuple((c, "absent") for c in OPTIONAL)),
    "optional columns empty": Edge(columns=tuple((c, "empty") for c in OPTIONAL)),
    "one trial": Edge(representations=("original",)),
    "dilation and ShorT of one value, a failed trial": Edge(dilation=True, short=True, failed=True),
    "three classes, two seeds, no positive": Edge(task="CL3", seeds=2, pos=0),
}


@pytest.mark.parametrize("name", list(NAMED))
def test_every_step_survives_a_named_edge(name, tmp_path):
    result = _analysed(tmp_path, NAMED[name])
    edge = NAMED[name]
    aurocs = result.artifacts["aurocs"].tables["trial_aurocs"]
    assert aurocs.height == len(edge.representations) * edge.seeds * len(edge.backbones) \
        + edge.short  # every finished trial has its row (the dilated one lives in step dilation's table)
    if min(edge.pos, edge.neg) == 0:  # one class in the test split: no AUROC, and the verdict says why
        assert aurocs["auroc"].is_nan().all()
        findings = result.artifacts["shortcut"].tables.get("shortcut_findings", pl.DataFrame())
        for row in findings.iter_rows(named=True):
            assert row["verdict"] in ("too_few", "degenerate")
            assert f"{edge.pos} positive and {edge.neg} negative test patients" in row["reason"] \
                or row["verdict"] == "degenerate"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(edge=edges())
def test_every_step_survives_generated_edges(edge, tmp_path_factory):
    _analysed(tmp_path_factory.mktemp("edge"), edge)


def _failing_step(run):
    raise RuntimeError("planted failure\nsecond line")


def test_a_failing_step_is_one_line_and_the_rest_stands(tmp_path, monkeypatch):
    """A step that raises: one console line naming it, its traceback kept, a marked section in the report, every
    other step's tables written, and a non-zero exit from the command."""
    run = write_edge_run(tmp_path, Edge())
    from cxrray.analysis.steps import AnalysisStep

    step = ANALYSES.get("calibration")
    monkeypatch.setitem(ANALYSES._items, "calibration", AnalysisStep("calibration", step.order, _failing_step))
    result = run_analysis(run, OPTIONS)
    assert [f.step for f in result.failed] == ["calibration"]
    assert result.failed[0].error == "RuntimeError: planted failure"
    assert "planted failure" in result.failed[0].log.read_text()  # the traceback, in analysis/failed/
    assert result.failed[0].log == run / "analysis" / "failed" / "calibration.txt"
    assert result.failure_lines() == [f"[cxrray] step calibration failed: RuntimeError: planted failure (traceback: "
                                      f"{run / 'analysis' / 'failed' / 'calibration.txt'}); the other steps' tables "
                                      f"and the report were written"]
    assert (run / "analysis" / "trial_aurocs.csv").exists() and (run / "analysis" / "checklist.csv").exists()
    assert not (run / "analysis" / "calibration.csv").exists()
    html = (run / "report.html").read_text()
    assert 'id="failed-steps"' in html and "<strong>calibration</strong>" in html
    assert "RuntimeError: planted failure" in html


@pytest.mark.parametrize(("damage", "name"), [("truncated", "predictions.parquet"),
                                              ("not parquet", "results.parquet")])
def test_a_damaged_run_file_is_one_line_naming_it(tmp_path, damage, name, capsys):
    from cxrray.analysis.__main__ import main

    run = write_edge_run(tmp_path, Edge())
    path = run / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"row,trial_id\n1,x\n")
    assert main([str(run), "--saliency", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m cxrray.analysis: error: {path}: unreadable (")
    assert lines[0].endswith("rerun the sweep's command to gather it again from the trial folders (finished "
                             "trials are kept)")


def test_the_command_exits_1_after_a_failed_step_and_prints_its_line(tmp_path, monkeypatch, capsys):
    from cxrray.analysis.__main__ import main
    from cxrray.analysis.steps import AnalysisStep

    run = write_edge_run(tmp_path, Edge())
    step = ANALYSES.get("subgroups")
    monkeypatch.setitem(ANALYSES._items, "subgroups", AnalysisStep("subgroups", step.order, _failing_step))
    assert main([str(run), "--saliency", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"[cxrray] step subgroups failed: RuntimeError: planted failure (traceback: {run}/analysis/failed/"
        f"subgroups.txt); the other steps' tables and the report were written"]
    assert f"Report: {run / 'report.html'}" in captured.out


def test_a_damaged_trial_file_trains_again_instead_of_stopping_every_rerun(tmp_path, capsys):
    """A finished trial's truncated predictions.parquet made every rerun of the sweep crash in ``collect``; the
    sweep now sets it aside (kept, renamed) and that trial trains again, said in one line."""
    from edge_runs import specs_of

    from cxrray.config import RunLayout
    from cxrray.tuning.storage import set_aside_damaged

    run = write_edge_run(tmp_path, Edge())
    spec = specs_of(Edge())[0]
    trial = RunLayout(run).trial(spec.trial_id)
    data = trial.predictions.read_bytes()
    trial.predictions.write_bytes(data[:100])
    set_aside_damaged(trial, spec.run_name)
    assert not trial.done and trial.path.joinpath("predictions.parquet.damaged").read_bytes() == data[:100]
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"[cxrray] {trial.predictions}: unreadable (")
    assert said[0].endswith(f"trial {spec.run_name} trains again (its predictions are kept as "
                            f"predictions.parquet.damaged)")
    other = RunLayout(run).trial(specs_of(Edge())[1].trial_id)
    set_aside_damaged(other, "intact")  # a readable file stays where it is
    assert other.done and capsys.readouterr().out == ""
    other.meta.write_text(other.meta.read_text()[:50])  # a truncated trial.json: the trial trains again too
    set_aside_damaged(other, "record")
    said = capsys.readouterr().out.strip().splitlines()
    assert not other.done and len(said) == 1 and said[0].startswith(f"[cxrray] {other.meta}: unreadable (")


def test_library_warnings_are_counted_once_in_a_file_not_printed_per_trial(tmp_path, monkeypatch, capsys):
    """scikit-learn's warnings printed five times a run (once per trial); a step's own check already says why a
    number is missing. They are gathered per step and message, counted, in analysis/warnings.txt and one line."""
    import numpy as np
    from sklearn.metrics import roc_curve

    from cxrray.analysis.steps import AnalysisStep

    step = ANALYSES.get("underdiagnosis")

    def warns_per_trial(run):
        for _ in range(5):
            roc_curve(np.ones(4), np.linspace(0, 1, 4))  # no negative sample: UndefinedMetricWarning
        return step.run(run)

    monkeypatch.setitem(ANALYSES._items, "underdiagnosis", AnalysisStep("underdiagnosis", step.order,
                                                                        warns_per_trial))
    run = write_edge_run(tmp_path, Edge())
    result = run_analysis(run, AnalysisOptions(saliency=0))
    assert (run / "analysis" / "warnings.txt").read_text().splitlines() == [
        "step underdiagnosis: UndefinedMetricWarning: No negative samples in y_true, false positive value should be "
        "meaningless (5x)"]
    assert result.text.endswith("Library warnings: 5 during the analysis, 1 distinct (analysis/warnings.txt)")
    assert "UndefinedMetricWarning" not in capsys.readouterr().err
