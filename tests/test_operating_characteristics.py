"""Operating characteristics by simulation with known truth (issue 26, item 12), the quick version of
``bench/operating_characteristics.py``: clustered null test sets give few false claims, a planted signal is
found, intervals cover near 1, and the patients-needed estimate of the report agrees with the simulation."""

import pytest

from cxrray.analysis.subgroups import subgroup_oc
from cxrray.stats.calibration import calibration_oc
from cxrray.verdicts.patients import approx_patients, expected_verdict
from cxrray.verdicts.plan import patients_needed
from cxrray.verdicts.simulate import Truth, verdict_oc


@pytest.mark.parametrize("patients, images, icc", [(12, 5, 0.8), (40, 3, 0.5), (300, 2, 0.0)])
def test_no_signal_gives_few_false_claims(patients, images, icc):
    r = verdict_oc(Truth(0.5, 0.95, patients, images, icc), reps=250, seed=patients + 1)
    assert r["false_claims"] <= 0.085, r  # nominal 5 %; Monte Carlo error +/- 0.028 (2 sd at 250 sets)
    assert r["cover_auroc"] >= 0.9


def test_a_true_shortcut_is_found_and_never_called_no_shortcut():
    r = verdict_oc(Truth(0.95, 0.95, 100, 3, 0.5), reps=60, seed=1)
    assert r["shortcut"] >= 0.95 and r["no_shortcut"] == 0.0 and r["cover_retained"] >= 0.9
    near = verdict_oc(Truth(0.99, 0.99, 30, 2, 0.5), reps=100, seed=2)
    assert near["cover_auroc"] >= 0.93 and near["cover_drop"] >= 0.93


def test_calibration_and_subgroups_hold_their_level_with_clustered_patients():
    c = calibration_oc(60, 5, 100, seed=3)
    assert c["false_flags"] <= 0.1 and c["cover_slope"] >= 0.85
    s = subgroup_oc(120, 3, 0.8, 100, seed=4)
    assert s["false_gaps"] <= 0.1


def test_the_reports_estimate_agrees_with_the_simulation():
    plan = patients_needed(0.75, 0.95, images=2, icc=0.5, reps=60, seed=0)
    assert plan.target == "shortcut" and plan.patients is not None
    quick = approx_patients(0.75, deff=1.3, images=1.5, prevalence=0.4, level=0.95)
    assert quick is not None and plan.patients / 2.5 <= quick <= plan.patients * 2.5, (quick, plan.patients)
    assert expected_verdict(0.52) == "no_shortcut" and expected_verdict(0.3) == "inverted"
    assert approx_patients(0.6, 1.0, 1.0, 0.4, 0.95) is None  # at the margin nothing decides it
