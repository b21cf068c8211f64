"""Underdiagnosis per subgroup (issue 30, item 4): the false-negative rate at the validation threshold, its gap
with patients as the unit. Operating characteristics by simulation with known truth (clustered patients, 10 to
100 positive patients a side): no false claim of a gap beyond 5 % and the intervals covering; then a stored run
with a planted gap for women, found, and without it, nothing found."""

import numpy as np
import polars as pl
import pytest

from cxrray.analysis.underdiagnosis import fnr_gap, fnr_interval, underdiagnosis_table, youden_threshold


def _missed(rng, patients: int, fnr: float, icc: float) -> tuple[np.ndarray, np.ndarray]:
    """Positive images (1-3 per patient) missed with a patient-level rate of mean ``fnr`` (intra-patient ICC)."""
    m = rng.integers(1, 4, patients)
    rate = rng.beta(fnr * (1 / icc - 1), (1 - fnr) * (1 / icc - 1), patients) if icc else np.full(patients, fnr)
    patient = np.repeat(np.arange(patients), m)
    return rng.random(len(patient)) < rate[patient], patient


@pytest.mark.parametrize("patients, fnr, icc", [(10, 0.3, 0.5), (30, 0.1, 0.0), (30, 0.5, 0.5), (100, 0.3, 0.5)])
def test_no_gap_is_claimed_where_none_is_and_the_intervals_cover(patients, fnr, icc):
    rng = np.random.default_rng(patients)
    reps, claims, gap_cover, fnr_cover = 300, 0, 0, 0
    for _ in range(reps):
        a, pa = _missed(rng, patients, fnr, icc)
        b, pb = _missed(rng, 2 * patients, fnr, icc)
        missed, patient = np.concatenate([a, b]), np.concatenate([pa, pb + patients])
        inside = np.arange(len(missed)) < len(a)
        _gap, lo, hi, p = fnr_gap(missed, patient, inside, ~inside)
        claims += p < 0.05
        gap_cover += lo <= 0 <= hi
        assert (p < 0.05) == (not lo <= 0 <= hi)  # one decision, one interval
        _, flo, fhi, _ = fnr_interval(missed, patient, inside)
        fnr_cover += flo <= fnr <= fhi
    se = np.sqrt(0.05 * 0.95 / reps)
    assert claims / reps <= 0.05 + 2 * se
    assert gap_cover / reps >= 0.95 - 2 * se and fnr_cover / reps >= 0.93 - 2 * se


def test_a_planted_gap_is_found_most_of_the_time():
    rng = np.random.default_rng(1)
    found = 0
    for _ in range(200):
        a, pa = _missed(rng, 30, 0.5, 0.5)
        b, pb = _missed(rng, 60, 0.2, 0.5)
        missed, patient = np.concatenate([a, b]), np.concatenate([pa, pb + 30])
        inside = np.arange(len(missed)) < len(a)
        gap, _lo, _hi, p = fnr_gap(missed, patient, inside, ~inside)
        found += p < 0.05 and gap > 0
    assert found / 200 >= 0.75


def test_the_threshold_is_youdens_on_validation():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.65, 0.5, 0.7, 0.8, 0.9])
    assert youden_threshold(y, s) == 0.7  # J = 3/4 - 0 there; at 0.5 it is 1 - 2/4


def _stored(gap: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One trial's val and test predictions: women's positive scores lowered by ``gap`` (their disease fainter)."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, patients in (("val", 200), ("test", 300)):
        for i in range(patients):
            sick, female = rng.random() < 0.5, rng.random() < 0.5
            for _ in range(rng.integers(1, 3)):
                score = (1.5 if sick else 0.0) - (gap if sick and female else 0.0) + rng.normal(0, 1)
                rows.append({"trial_id": "t0", "split": split, "patient_id": f"{split}{i}", "target": int(sick),
                             "sex": "F" if female else "M", "source": "a", "prob_CVP": 1 / (1 + np.exp(-score))})
    predictions = pl.DataFrame(rows).with_columns((1 - pl.col("prob_CVP")).alias("prob_NCV"))
    aurocs = pl.DataFrame({"trial_id": ["t0"], "task": ["CL2"], "positive": ["CVP"], "representation": ["original"]})
    return predictions, aurocs


@pytest.mark.parametrize("gap, expected", [(1.5, "underdiagnosed"), (0.0, "no gap found")])
def test_a_planted_gap_for_women_is_named_and_none_is_claimed_without_it(gap, expected):
    predictions, aurocs = _stored(gap, 0)
    table = underdiagnosis_table(predictions, aurocs, {"t0": "original.resnet18"}, "representation")
    women = table.filter((pl.col("attribute") == "sex") & (pl.col("subgroup") == "F")).row(0, named=True)
    assert women["verdict"] == expected and women["against"] == "M"
    assert (women["gap"] > 0.2) == bool(gap)
    assert 0 < women["threshold"] < 1
