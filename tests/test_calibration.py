"""Calibration (issue 20, item 5), known answers: ECE against a hand count; calibrated scores are flagged at
about the test's level (false flags), planted miscalibration is found (detection); the registered step on a
stored run flags only the planted trial, and writes the table, the figure and the report section."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_analysis_stats import _run

from cxrray.analysis.calibration import calibration_test, ece
from cxrray.analysis.run import run_analysis


def test_ece_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    y = np.array([0, 0, 1, 0, 1, 1])
    # bins: [0.0,0.1): conf .05 freq 0 -> .05 (2 images); [0.9,1.0): conf .95 freq .5 -> .45 (2); [0.5,0.6): .45 (2)
    assert ece(y, p) == pytest.approx((2 * 0.05 + 2 * 0.45 + 2 * 0.45) / 6)
    assert ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0  # p = 1 lands in the last bin


def _patients(n):
    return np.repeat(np.arange(n // 2), 2)[:n]  # two images per patient


def test_false_flags_and_detection_rates():
    """200 calibrated trials (labels drawn from the scores) and 200 overconfident ones (the same scores pushed
    to the extremes) of 300 images: false flags near the 5 % level, detections near all."""
    rng = np.random.default_rng(7)
    false_flags = detections = 0
    for k in range(200):
        p = rng.beta(2, 2, 300)
        y = rng.random(300) < p
        false_flags += calibration_test(y, p, _patients(300), seed=k, boot=199)["p"] < 0.05
        sharp = p ** 3 / (p ** 3 + (1 - p) ** 3)  # overconfident: same ranking (same AUROC), wrong probabilities
        detections += calibration_test(y, sharp, _patients(300), seed=k, boot=199)["p"] < 0.05
    assert 0.01 <= false_flags / 200 <= 0.10, false_flags
    assert detections / 200 >= 0.95, detections


def test_ci_covers_and_narrows_with_more_patients():
    rng = np.random.default_rng(3)
    widths = []
    for n in (100, 1600):
        p = rng.random(n)
        y = rng.random(n) < np.clip(p + 0.15, 0, 1)  # underconfident by 0.15 everywhere
        r = calibration_test(y, p, _patients(n), boot=300)
        assert r["ece_lo"] <= r["ece"] <= r["ece_hi"]
        widths.append(r["ece_hi"] - r["ece_lo"])
    assert widths[1] < widths[0] / 2
    assert r["ece"] == pytest.approx(0.13, abs=0.03) and r["p"] < 0.01


def test_the_step_flags_only_the_planted_trial(tmp_path):
    preds, res = _run(tmp_path, {"original": 2.0, "lungs_removed": 1.0, "lungs_isolated": 1.5}, n=400)
    rng = np.random.default_rng(11)
    p = rng.beta(2, 2, 400)
    y = rng.random(400) < p
    squashed = 0.5 + (p - 0.5) * 0.3  # underconfident: every probability pulled towards 0.5
    truth = {"t0": p, "t1": squashed, "t2": p}
    preds = pl.concat([part.with_columns(pl.Series("target", y.astype(int)), pl.Series("prob_CVP", truth[tid]),
                                         pl.Series("prob_NCV", 1 - truth[tid]))
                       for tid, part in preds.group_by("trial_id", maintain_order=True) for tid in [tid[0]]])
    preds.write_parquet(tmp_path / "predictions.parquet")
    run_analysis(tmp_path)
    table = pl.read_csv(tmp_path / "analysis" / "calibration.csv").sort("trial_id")
    assert table["verdict"].to_list() == ["consistent with calibration", "miscalibrated",
                                          "consistent with calibration"]
    planted = table.filter(pl.col("trial_id") == "t1").row(0, named=True)
    assert planted["ece"] > planted["ece_if_calibrated"] + 0.03 and planted["p"] < 0.01
    calibrated = table.filter(pl.col("trial_id") == "t0").row(0, named=True)
    assert calibrated["ece"] > 0.03  # a calibrated model's ECE on 400 images is far from 0: the null says so
    assert (tmp_path / "analysis" / "reliability.png").stat().st_size > 10_000
    html = (tmp_path / "report.html").read_text()
    assert "Calibration (does a probability mean what it says?)" in html and "miscalibrated" in html
