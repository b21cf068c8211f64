"""Calibration (issue 20, item 5), known answers: ECE against a hand count; calibrated scores are flagged at
about the test's level (false flags), planted miscalibration is found (detection); the registered step on a
stored run flags only the planted trial, and writes the table, the figure and the report section."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_analysis_stats import _run

from cxrray.analysis.analyze import run_analysis
from cxrray.stats.calibration import calibration_test, ece


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


def test_patients_that_share_label_and_score_are_not_miscalibration():
    """Perfectly calibrated models whose patients share label and score (100 patients x 3 images): the old null
    drew each image's label independently and flagged 56 % of such test sets; drawn per patient, about 5 %."""
    rng = np.random.default_rng(5)
    flags = 0
    for k in range(150):
        p_patient = rng.beta(2, 2, 100)
        y_patient = rng.random(100) < p_patient
        pid = np.repeat(np.arange(100), 3)
        flags += calibration_test(y_patient[pid], p_patient[pid], pid, seed=k, boot=199)["p"] < 0.05
    assert flags / 150 <= 0.09, flags


def test_intercept_and_slope_with_patient_clustered_intervals():
    """Logistic recalibration: a calibrated model has intercept 0 and slope 1 inside their intervals (coverage
    over clustered sets), an overconfident one a slope below 1 with its interval below 1, and intervals narrow with
    more patients."""
    rng = np.random.default_rng(3)
    covered, widths = 0, []
    for k in range(120):
        n = 150
        p_patient = rng.beta(2, 2, n)
        y_patient = rng.random(n) < p_patient
        pid = np.repeat(np.arange(n), 2)
        r = calibration_test(y_patient[pid], np.clip(p_patient[pid] + rng.normal(0, 0.01, 2 * n), 0.01, 0.99), pid,
                             seed=k, boot=49)
        covered += (r["slope_lo"] <= 1 <= r["slope_hi"]) and (r["intercept_lo"] <= 0 <= r["intercept_hi"])
    assert covered / 120 >= 0.88, covered
    for n in (100, 1600):
        p = rng.beta(2, 2, n)
        y = rng.random(n) < p
        sharp = p ** 3 / (p ** 3 + (1 - p) ** 3)
        r = calibration_test(y, sharp, _patients(n), boot=99)
        widths.append(r["slope_hi"] - r["slope_lo"])
    assert r["slope"] == pytest.approx(1 / 3, abs=0.08) and r["slope_hi"] < 1
    assert widths[1] < widths[0] / 2


def test_the_step_flags_only_the_planted_trial(tmp_path):
    preds, _res = _run(tmp_path, {"original": 2.0, "lungs_removed": 1.0, "lungs_isolated": 1.5}, n=400)
    rng = np.random.default_rng(12)  # (seed 11 drew a calibrated set at the edge: Holm p 0.04995)
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
