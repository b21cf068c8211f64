"""Every option and analysis argument checked where it is declared, one line before any work (issue 42, item 2):
``plan``'s numbers, ``analyze --family/--saliency/--skip``, the verdict's margins, duplicated axis values, the
sweep's size and ``--config`` given a folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxrray.analysis.__main__ import main as analysis_main
from cxrray.analysis.steps import AnalysisOptions
from cxrray.registry import UserError
from cxrray.studies.hide_seek import HideSeek
from cxrray.tuning import cli
from cxrray.tuning.runner import check_size
from cxrray.verdicts.verdict import Rules

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("option, value, says", [
    ("--reps", "-5", "argument --reps: -5 is out of range: [20, 100000]"),
    ("--margin", "-1", "argument --margin: -1 is out of range: (0, 0.5)"),
    ("--trials", "0", "argument --trials: 0 is out of range: [1, 100000]"),
    ("--prevalence", "0", "argument --prevalence: 0 is out of range: (0, 1)"),
    ("--images", "0", "argument --images: 0 is out of range: [1, 1000]"),
    ("--icc", "1", "argument --icc: 1 is out of range: [0, 1)"),
    ("--images", "2.5", "argument --images: '2.5' is not a whole number"),
])
def test_plan_refuses_a_number_out_of_range_in_one_line_before_simulating(capsys, option, value, says):
    start = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        analysis_main(["plan", "--auroc-hidden", "0.7", option, value])
    assert stop.value.code == 2 and time.perf_counter() - start < 1.0  # --prevalence 0 used to take 107 s
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m cxrray.analysis plan: error: {says}"


@pytest.mark.parametrize("args, says", [
    (["--family", "study", "task", "seeds"], "--family study task seeds: unknown column 'seeds' (did you mean "
                                             "'seed'?); valid: study, representation, backbone, task, pretraining, "
                                             "design, seed, image_size, pretrained, init_from, fold, setting, "
                                             "method, mask_dilation"),
    (["--saliency", "-5"], "--saliency -5 is out of range: [0, 100000] (images)"),
    (["--transfer-patients", "-1"], "--transfer-patients -1 is out of range: [0, 1e+08] (patients)"),
    (["--workers", "0"], "--workers 0 is out of range: [1, 100000] (workers)"),
    (["--equivalence-auroc", "-1"], "--equivalence-auroc -1 is out of range: (0, 0.5)"),
    (["--alpha", "1.5"], "--alpha 1.5 is out of range: (0, 1)"),
    (["--skip", "bogus_step"], "unknown analysis step 'bogus_step'; valid: aurocs, bias"),
])
def test_analyze_refuses_a_bad_argument_in_one_line_before_reading_the_run(tmp_path, capsys, args, says):
    assert analysis_main([str(tmp_path / "no-such-run"), *args]) == 2  # checked before the run is looked at
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("python -m cxrray.analysis: error: ") and says in err[0], err


def test_a_family_column_named_twice_is_one_and_rules_check_their_margins():
    assert AnalysisOptions(family=("seed", "task", "seed")).family == ("seed", "task")
    with pytest.raises(UserError, match=r"--equivalence-retained 0 is out of range: \(0, inf\)"):
        Rules(margin_retained=0)


def test_an_axis_value_given_twice_is_one_everywhere(tmp_path):
    """``--seeds 0 0`` and ``--backbones resnet18 resnet18`` used to raise after the ingest; they are the sweep
    of ``--seeds 0`` (the rule ``--mask-dilation 4 4`` already had), from the command line and a study file."""
    p = cli.study_parser(None, HideSeek)
    study = cli.parse_study(p, ["--seeds", "0", "0", "1", "--backbones", "resnet18", "resnet18"], HideSeek)
    assert (study.seeds, study.backbones) == ((0, 1), ("resnet18",))
    (tmp_path / "s.yaml").write_text("mask_dilation: [4, 4]\nseeds: [3, 3]\n")
    assert HideSeek.read_file(tmp_path / "s.yaml") == {"mask_dilation": (4,), "seeds": (3,)}


def test_a_folder_given_as_study_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match=f"^{tmp_path}: is a folder; --config takes a YAML study file"):
        HideSeek.read_file(tmp_path)


def test_the_sweep_size_is_checked_before_ray_and_again_exactly(tmp_path):
    """A study file with 800,000 seeds was accepted as 1,600,000 trials, hung and took 4 GB; it is one line in
    seconds, before Ray starts; ``--max-trials`` raises the limit, and ``run_sweep`` checks the exact count."""
    (tmp_path / "big.yaml").write_text("seeds: [" + ", ".join(map(str, range(800_000))) + "]\n")
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--config",
                           str(tmp_path / "big.yaml"), "--out", str(tmp_path / "run"), "--backbones", "basecnn",
                           "resnet18"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "hide_seek.py: error: about 8000000 trials (5 representations x 2 backbones x 800000 seeds x 1 "
        "mask_dilation x 1 methods) is more than --max-trials 10000; raise --max-trials if this is meant"]
    assert time.perf_counter() - start < 60 and not (tmp_path / "run").exists()
    study = HideSeek(seeds=tuple(range(3000)), backbones=("basecnn",), max_trials=20_000).derive()
    study.check()  # 15,000 trials allowed when asked for
    with pytest.raises(UserError, match=r"^the sweep has 12 trials, more than --max-trials 10; raise --max-trials"):
        check_size(12, 10)
    check_size(10, 10)


def test_a_refused_command_leaves_no_run_folder_and_the_lock_names_the_command_once(tmp_path, monkeypatch,
                                                                                    capsys):
    """A refused run left ``study.yaml`` and ``provenance.json`` in a new ``--out``; the lock read "cxrray
    hide-seek hide-seek". A folder that existed before the command stays (with what it held)."""
    from cxrray.studies.command import main

    monkeypatch.setattr(sys, "argv", ["cxrray"])
    missing = tmp_path / "missing.csv"
    for out in (tmp_path / "new", tmp_path / "old"):
        with pytest.raises(SystemExit) as stop:
            main(["hide-seek", "--out", str(out), "--manifest", str(missing), "--backbones", "basecnn"])
        assert stop.value.code == 2
        assert sys.argv == ["cxrray hide-seek", "--out", str(out), "--manifest", str(missing), "--backbones",
                            "basecnn"]  # what the lock and provenance.json record
        (tmp_path / "old").mkdir(exist_ok=True)
    assert not (tmp_path / "new").exists() and (tmp_path / "old").is_dir()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"cxrray hide-seek: error: {missing}")
