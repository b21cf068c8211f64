"""Study CLIs: presets, YAML study files checked before Ray starts, source-bias designs, and reliability."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from cxrray.data.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("hide_seek", "staged_pretraining", "source_bias")


def _cli(name):
    spec = importlib.util.spec_from_file_location(f"sweep_{name}", ROOT / "sweeps" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # a dataclass (the study's record) resolves its annotations through its module
    spec.loader.exec_module(mod)
    return mod


def _run(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"} | (env or {})
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=ROOT)


@pytest.mark.parametrize("name", STUDIES)
def test_presets_yaml_and_command_line_precedence(name, tmp_path):
    cli = _cli(name)
    demo, paper = cli.parse_args([]), cli.parse_args(["--preset", "paper"])
    assert demo.preset == "demo" and paper.preset == "paper"
    for key, value in cli.PRESETS["paper"].items():
        assert paper.to_dict()[key] == value
    study = tmp_path / "study.yaml"
    study.write_text("preset: paper\nimage-size: 96\nseeds: [4, 5]\nbackbones: resnet18\n")
    args = cli.parse_args(["--config", str(study), "--image-size", "48"])
    assert args.preset == "paper" and args.image_size == 48 and args.seeds == (4, 5)  # CLI > YAML > preset
    assert args.backbones == ("resnet18",)  # one value where a list is expected is read as a list


@pytest.mark.parametrize("text, message", [
    ("backbone: [resnet18]\n", "unknown key 'backbone' for study hide_seek (did you mean 'backbones'?)"),
    ("image_size: large\n", "key 'image_size': 'large' is not a valid int"),
    ("pretrained: 1\n", "key 'pretrained' must be true or false"),
    ("wandb: sometimes\n", "'sometimes' is not one of"),
    ("study: source_bias\n", "this is a study for another command"),
    ("backbones: [resnet181]\n", "unknown backbone 'resnet181'; valid:"),
])
def test_bad_yaml_study_is_rejected_before_ray_starts(tmp_path, text, message):
    study = tmp_path / "study.yaml"
    study.write_text(text)
    proc = _run("hide_seek", "--config", str(study), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    if "unknown backbone" not in message:  # registry names are checked after the file is read
        assert str(study) in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "ray").exists()


def test_resume_needs_a_run(tmp_path):
    proc = _run("hide_seek", "--resume", "--out", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


def test_design_splits_folds_and_left_out_sources(tmp_path):
    from cxrray.data.phantom import write_phantom
    from cxrray.tuning.study import design_splits

    rows = load_manifest(write_phantom(tmp_path / "ph", n_patients=80, confound=0.6, seed=2, size=32))
    folds = list(design_splits(rows, "multiple", "CL2", folds=3, seed=0))
    assert [f for f, _ in folds] == [0, 1, 2]
    tests = [set(df.filter(pl.col("split") == "test")["patient_id"]) for _, df in folds]
    assert not (tests[0] & tests[1]) and not (tests[1] & tests[2])  # each patient tested once
    out = list(design_splits(rows, "independent", "CL2"))
    held = [set(df.filter(pl.col("split") == "test")["source"]) for _, df in out]
    assert len(out) >= 2 and all(len(h) == 1 for h in held) and len({min(h) for h in held}) == len(out)
    for _, df in out:  # the held-out source never trains
        test = set(df.filter(pl.col("split") == "test")["source"])
        assert not set(df.filter(pl.col("split") != "test")["source"]) & test


def test_source_bias_smoke_sweep_with_fucitnet_a_retry_and_a_failure(tmp_path):
    """Single and multiple designs x the standard fit and FuCiTNet (COVID-SDNet's class-inherent
    transformations) in one sweep. The single-design FuCiTNet trial fails once after its stage-1 epoch and
    goes on from that checkpoint into stage 2; the multiple-design standard trial always fails and is reported
    while the rest finish; the analysis has the method axis and accuracy per severity level per method."""
    faults = "original.basecnn.none.single.fucitnet.s0:1,original.basecnn.none.multiple.s0:99"
    proc = _run("source_bias", "--smoke-test", "--methods", "standard", "fucitnet", "--out", str(tmp_path),
                "--wandb", "disabled", env={"CXRRAY_FAULT_INJECT": faults, "CXRRAY_EXPERIMENT_TRIALS": "2"})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    # two Tune experiments of two trials, one after the other; the progress counts across both
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if "Tune experiment" in line] == \
        ["[cxrray] Tune experiment 1/2", "[cxrray] Tune experiment 2/2"]
    assert sorted(re.findall(r"\[cxrray\] (\d)/4 (?:done|FAILED)", proc.stdout)) == ["1", "2", "3", "4"]
    results = pl.read_parquet(tmp_path / "results.parquet")
    status = {(r["design"], r["method"]): r["status"] for r in results.iter_rows(named=True)}
    assert status == {("single", "standard"): "finished", ("single", "fucitnet"): "finished",
                      ("multiple", "standard"): "failed", ("multiple", "fucitnet"): "finished"}
    retried = results.filter((pl.col("design") == "single") & (pl.col("method") == "fucitnet"))["trial_id"][0]
    starts = [s for s in (tmp_path / "trials" / retried / "attempts.log").read_text().split() if "start_epoch" in s]
    assert starts == ["start_epoch=0", "start_epoch=1"]  # the retry went on into stage 2 from the checkpoint
    assert (tmp_path / "trials" / retried / "fucitnet.pt").exists()
    assert "epoch 2/2 (stage 2)" in proc.stdout and "FAILED: original.basecnn.none.multiple.s0" in proc.stdout
    single = pl.read_csv(tmp_path / "splits-single-CL2-0.csv")
    by_class = single.with_columns((pl.col("label") == "CVP").alias("covid")).group_by("covid").agg(
        pl.col("source").n_unique())
    assert by_class["source"].to_list() == [1, 1]  # single design: one source per class
    assert "| condition" in proc.stdout and "| single / fucitnet" in proc.stdout  # design / method rows
    sev = pl.read_csv(tmp_path / "analysis" / "severity_accuracy.csv")
    assert set(sev["method"]) == {"standard", "fucitnet"}


@pytest.mark.slow  # retry and failure are also in the source-bias smoke sweep above (CI)
def test_failing_trial_is_retried_from_its_checkpoint_then_reported(tmp_path):
    """One trial fails once (retried from its epoch-1 checkpoint, finishes); one always fails: it is
    reported with its error while the sweep completes."""
    faults = "original.basecnn.none.s0:1,lungs_removed.basecnn.none.s0:99"
    proc = _run("hide_seek", "--smoke-test", "--epochs", "2", "--out", str(tmp_path), "--wandb", "disabled",
                "--max-concurrent", "1", env={"CXRRAY_FAULT_INJECT": faults})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pl.read_parquet(tmp_path / "results.parquet")
    status = dict(zip(results["representation"], results["status"], strict=True))
    assert status == {"original": "finished", "lungs_removed": "failed"}
    ok, bad = (results.filter(pl.col("representation") == r).row(0, named=True) for r in ("original", "lungs_removed"))
    starts = (tmp_path / "trials" / ok["trial_id"] / "attempts.log").read_text().split()
    assert [s for s in starts if s.startswith("start_epoch")] == ["start_epoch=0", "start_epoch=1"]  # resumed
    assert "injected fault" in (tmp_path / "trials" / bad["trial_id"] / "error.txt").read_text()
    assert "1/2 done" in proc.stdout and "2/2 FAILED: lungs_removed" in proc.stdout
    assert "failed 1" in proc.stdout  # the live status line


def test_search_axes_expand_and_validation_picks_the_setting():
    from cxrray.analysis.aurocs import select_by_validation
    from cxrray.config import TrialSpec
    from cxrray.tuning.study import expand_search, parse_search

    search = parse_search(["lr=1e-3,1e-4", "batch_size=16,32"])
    assert search == {"lr": [1e-3, 1e-4], "batch_size": [16, 32]}
    with pytest.raises(ValueError, match="FIELD one of"):
        parse_search(["learning_rate=1"])
    base = [TrialSpec(study="s", data_id="d", representation=r, backbone="basecnn")
            for r in ("original", "lungs_removed")]
    specs = expand_search(base, search)
    assert len(specs) == 8 and len({s.trial_id for s in specs}) == 8
    aurocs = pl.DataFrame({"trial_id": [s.trial_id for s in specs],
                           "representation": [s.representation for s in specs],
                           "backbone": "basecnn", "seed": 0, "best_val_auroc": [0.6, 0.9, 0.7, 0.8] * 2,
                           "auroc": [0.99, 0.5, 0.98, 0.97] * 2})
    best = select_by_validation(aurocs)
    assert best.height == 2 and set(best["auroc"]) == {0.5}  # chosen by validation, even when test disagrees


def test_status_line_counts_trials_tune_has_not_created_yet():
    from types import SimpleNamespace

    from cxrray.tuning.progress import status_line

    current, other = SimpleNamespace(status="RUNNING"), SimpleNamespace(status="RUNNING")
    line = status_line([current, other], current, total=10, done=3, failed=1, best=(0.91, "original.resnet18.none.s0"))
    assert line == ("done 3 | running 1 | pending 5 | failed 1 | best so far: original.resnet18.none.s0 "
                    "val AUROC 0.910")


@pytest.mark.parametrize("name", STUDIES)
def test_every_preset_parses_and_names_resolve(name):
    """Every preset of every study (paper, covid_cxnet, covid_sdnet, ...) is a valid study."""
    cli = _cli(name)
    for preset in cli.PRESETS:
        args = cli.parse_args(["--preset", preset])
        assert args.preset == preset


@pytest.mark.slow  # ~70 s; FuCiTNet through the runner is in the source-bias smoke sweep (CI)
def test_covid_sdnet_preset_end_to_end_reports_accuracy_per_severity(tmp_path):
    """The COVID-SDNet preset (segmentation crop, ResNet-50 + FC 512, k-fold) on the phantom, shrunk to a
    smoke size: the baseline classifier and the FuCiTNet methodology (generators, 4-class classifier, fusion)
    in one sweep; the analysis writes accuracy per severity level for each method."""
    proc = _run("source_bias", "--preset", "covid_sdnet", "--image-size", "32", "--epochs", "1", "--folds", "2",
                "--seeds", "0", "--phantom-patients", "48", "--wandb", "disabled", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pl.read_parquet(tmp_path / "results.parquet")
    assert set(results["backbone"]) == {"covid_sdnet"} and set(results["representation"]) == {"seg_crop"}
    assert sorted(zip(results["method"], results["fold"], strict=True)) == [
        ("fucitnet", 0), ("fucitnet", 1), ("standard", 0), ("standard", 1)]
    for tid in results.filter(pl.col("method") == "fucitnet")["trial_id"]:
        assert (tmp_path / "trials" / tid / "fucitnet.pt").exists()
    assert "epoch 2/2 (stage 2)" in proc.stdout
    sev = pl.read_csv(tmp_path / "analysis" / "severity_accuracy.csv")
    assert sev.height > 0 and {"severity", "accuracy", "method"} <= set(sev.columns)
    assert set(sev["method"]) == {"standard", "fucitnet"}
    assert set(sev["severity"].to_list()) & {"Normal-PCR+", "Mild", "Moderate", "Severe"}

def test_search_ties_are_broken_by_trial_id_whatever_the_order():
    """Validation AUROC 1.000 is frequent: the chosen setting must not depend on the order trials finished in."""
    from cxrray.analysis.aurocs import select_by_validation

    rows = pl.DataFrame({"trial_id": ["b2", "a1", "c3"], "representation": "original", "backbone": "basecnn",
                         "seed": 0, "fold": 0, "best_val_auroc": [1.0, 1.0, 0.9]})
    picks = {select_by_validation(rows.sample(fraction=1.0, shuffle=True, seed=s))["trial_id"][0] for s in range(8)}
    assert picks == {"a1"}


def test_a_run_folder_holding_another_phantom_is_refused(tmp_path):
    """--confound 0 into an --out holding the confound-1 phantom used to reuse it silently (the README's negative
    control then returned the positive result)."""
    from cxrray.tuning import cli

    first = cli.phantom_or_manifest(tmp_path, None, n_patients=4, confound=1.0, seed=0)
    assert cli.phantom_or_manifest(tmp_path, None, n_patients=4, confound=1.0, seed=0) == first  # same: reused
    with pytest.raises(cli.UserError, match=r"confound 1.0 \(asked 0.0\); use another --out"):
        cli.phantom_or_manifest(tmp_path, None, n_patients=4, confound=0.0, seed=0)


@pytest.mark.parametrize("name", (*STUDIES, "validate"))
def test_every_option_explains_itself(name, monkeypatch):
    """Every option of every study command has help, and the registry-typed ones list their valid names."""
    import argparse

    from cxrray.models import BACKBONES

    parsers = []
    real = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda self, *a, **k: parsers.append(self) or real(self, *a, **k))
    _cli(name).parse_args([])
    actions = [a for a in parsers[-1]._actions if a.option_strings and a.dest != "help"]
    assert [a.option_strings[0] for a in actions if not a.help] == []
    backbones = next(a for a in actions if a.dest == "backbones")
    assert all(b in backbones.help for b in BACKBONES.names())
    preset = next(a for a in actions if a.dest == "preset")
    assert "paper (" not in preset.help or "paper" in preset.choices  # no preset named that the command lacks


@pytest.mark.parametrize("name", STUDIES)
def test_recorded_study_yaml_reproduces_the_options_and_provenance_names_the_run(name, tmp_path):
    """study.yaml (written before Ray starts) given back to --config yields the same options; provenance.json
    holds each invocation's command line, the checkout's commit, the date and the package versions."""
    import json

    cli = _cli(name)
    argv = ["--preset", "paper", "--seeds", "3", "4", "--epochs", "2", "--lr", "0.01", "--out", str(tmp_path / "r"),
            "--wandb", "disabled"]
    args = cli.parse_args(argv)
    args.record(argv)
    layout = tmp_path / "r"
    again = cli.parse_args(["--config", str(layout / "study.yaml")])
    assert again == args  # the same frozen record, field by field
    assert yaml.safe_load((layout / "study.yaml").read_text()) == {"study": name} | args.to_dict()
    again.record(["--config", "study.yaml"])
    runs = json.loads((layout / "provenance.json").read_text())["invocations"]
    assert [r["command"][1:] for r in runs] == [argv, ["--config", "study.yaml"]]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert (runs[0]["cxrray_commit"] or "").split("+")[0] == head.strip()  # None outside a git checkout
    assert runs[0]["packages"]["torch"].startswith("2.") and runs[0]["date"][:4].isdigit()
