"""Known-answer validation: the protocol finds the planted shortcut, and only where it was planted."""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 3 minutes; the smoke, source-bias, fault and cluster sweeps stay in make test
def test_known_answer_validation_on_the_phantom(tmp_path):
    """Confound 0 / 1 phantoms (same patients; the middle dose is in the README's seed table), hide-and-seek at
    CI size: every required check must pass
    (shortcut flagged with the confound, lung-hiding at chance without it, lungs_isolated keeps the signal,
    dose-response; the Grad-CAM check is reported, not required). Seeded; the spread over phantom seeds is in
    the README."""
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "validate.py"), "--out", str(tmp_path),
                           "--confounds", "0", "1", "--wandb", "disabled"], capture_output=True, text=True,
                          timeout=900, env=env, cwd=ROOT)
    print(proc.stdout[-2500:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    report = (tmp_path / "validation.md").read_text()
    assert report.count("[PASS]") + report.count("[info]") == 6 and "[FAIL]" not in report
    assert report.count("[PASS]") >= 5
    table = pl.read_csv(tmp_path / "validation.csv").sort("confound")
    assert table["confound"].to_list() == [0.0, 1.0]
    assert table["shortcut_flagged"].to_list()[0] == 0 and table["shortcut_flagged"].to_list()[-1] == 2
    hidden = table["hidden_mean_auroc"].to_list()
    assert hidden[-1] - hidden[0] >= 0.2
    oc = pl.read_csv(tmp_path / "operating_characteristics.csv").sort("confound")
    assert oc["flag_rate"].to_list()[0] == 0.0 and oc["flag_rate"].to_list()[-1] == 1.0
    assert "Operating characteristics of the shortcut verdict over 1 phantom seed(s)" in report


def test_known_answer_checks_fail_when_the_answer_is_wrong(tmp_path):
    """The checks are not vacuous: tables where the unconfounded run 'finds' a shortcut fail them."""
    from cxrray.analysis.validation import known_answer_checks

    runs = {}
    for c in (0.0, 1.0):
        a = tmp_path / f"c{c}" / "analysis"
        a.mkdir(parents=True)
        reps = ["original", "lungs_isolated", "lungs_removed", "lungs_boxed_out"]
        pl.DataFrame({"representation": reps, "auroc": [0.99, 0.95, 0.97, 0.96], "ci_lo": [0.97, 0.9, 0.93, 0.92],
                      "ci_hi": [1.0] * 4}).write_csv(a / "trial_aurocs.csv")
        pl.DataFrame({"representation": reps[2:], "shortcut": [True, True]}).write_csv(a / "shortcut_findings.csv")
        runs[c] = tmp_path / f"c{c}"
    checks, _ = known_answer_checks(runs)
    failed = {c.name.split(":")[0] + ":" + c.name.split(":")[1][:25] for c in checks if not c.passed}
    assert any("confound 0: lungs_removed and lungs" in f for f in failed)
    assert any("confound 0: no shortcut" in f for f in failed)
    assert any(f.startswith("dose-response") for f in failed)


def test_operating_characteristics_count_verdicts_per_confound(tmp_path):
    """False flags at confound 0 and detections where the confound is planted, over phantom seeds, from the
    verdicts in each run's shortcut_findings.csv."""
    from cxrray.analysis.validation import operating_characteristics

    runs = {}
    for seed, verdicts in ((0, {0.0: ["no_shortcut", "inconclusive"], 1.0: ["shortcut", "shortcut"]}),
                           (1, {0.0: ["shortcut", "no_shortcut"], 1.0: ["shortcut", "degenerate"]})):
        runs[seed] = {}
        for c, v in verdicts.items():
            a = tmp_path / f"s{seed}" / f"c{c}" / "analysis"
            a.mkdir(parents=True)
            pl.DataFrame({"representation": ["original"], "auroc": [0.9], "ci_lo": [0.8], "ci_hi": [1.0]}).write_csv(
                a / "trial_aurocs.csv")
            pl.DataFrame({"representation": ["lungs_removed", "lungs_boxed_out"], "verdict": v,
                          "shortcut": [x == "shortcut" for x in v]}).write_csv(a / "shortcut_findings.csv")
            runs[seed][c] = a.parent
    oc = operating_characteristics(runs).sort("confound")
    assert oc["tested"].to_list() == [4, 4] and oc["shortcut"].to_list() == [1, 3]
    assert oc["flag_rate"].to_list() == [0.25, 0.75]
    assert (oc["rate_min"].to_list(), oc["rate_max"].to_list()) == ([0.0, 0.5], [0.5, 1.0])
    assert oc.filter(pl.col("confound") == 0.0)["inconclusive"][0] == 1
