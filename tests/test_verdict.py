"""The shortcut verdict: an effect size with intervals, and the edges (tiny sets, no spread, below chance)."""

import numpy as np
import polars as pl
import pytest

from cxrray.delong import auroc_cov
from cxrray.analysis.verdict import R_SHORTCUT, judge

LEVEL = 1 - 0.05 / 2  # two lung-hiding trials tested together


def _scores(rng, n, strength):
    y = np.arange(n) % 3 == 0
    return y, strength * y + rng.normal(0, 1, n)


def _paired(y, hidden, original):
    aucs, cov = auroc_cov(y, np.vstack([hidden, original]))
    return aucs[0], cov[0, 0], (aucs[1], cov[1, 1], cov[0, 1])


def test_perfect_separation_of_two_plus_two_images_is_not_a_shortcut():
    """Zero variance, AUROC 1.000: the old rule flagged it; the exact one-sided test gives p = 1/6."""
    y, s = np.array([1, 1, 0, 0], bool), np.array([0.9, 0.8, 0.2, 0.1])
    v = judge(y, s, 1.0, 0.0, LEVEL, original=(1.0, 0.0, 0.0))
    assert v.test == "exact" and v.p_above == pytest.approx(1 / 6) and v.verdict == "inconclusive"


def test_significantly_below_chance_is_inverted():
    rng = np.random.default_rng(0)
    y, s = _scores(rng, 300, -1.2)
    auc, var, orig = _paired(y, s, 3 * y + rng.normal(0, 1, 300))
    assert auc < 0.3
    assert judge(y, s, auc, var, LEVEL, original=orig).verdict == "inverted"


def test_a_tiny_effect_above_chance_is_no_shortcut():
    """AUROC 0.531 [0.520, 0.542] next to an original of 0.95 keeps 7 % of the signal: the old rule called it a
    shortcut; the retained fraction's upper bound is far below the threshold."""
    y, s = np.arange(4000) % 2 == 0, np.zeros(4000)  # only used by the exact test, which large sets do not take
    var = ((0.542 - 0.520) / 2 / 2.24) ** 2
    v = judge(y, s, 0.531, var, LEVEL, original=(0.95, 0.0002, 0.00002))
    assert v.p_above < 0.025 and v.retained == pytest.approx(0.031 / 0.45)
    assert v.retained_hi < R_SHORTCUT and v.verdict == "no_shortcut"
    assert v.diff == pytest.approx(0.419) and 0.38 < v.diff_lo < v.diff


def test_signal_kept_without_the_lungs_is_a_shortcut_with_its_effect():
    rng = np.random.default_rng(1)
    y, s = _scores(rng, 300, 2.5)
    auc, var, orig = _paired(y, s, y * 3.0 + rng.normal(0, 1, 300))
    v = judge(y, s, auc, var, LEVEL, original=orig)
    assert v.verdict == "shortcut" and v.retained > 0.8 and v.retained_lo < v.retained < v.retained_hi
    assert judge(y, s, auc, var, LEVEL, original=orig, degenerate="constant scores").verdict == "degenerate"


def test_chance_level_hidden_model_is_no_shortcut_and_without_an_original_the_auroc_decides():
    rng = np.random.default_rng(2)
    y, s = _scores(rng, 600, 0.0)
    auc, var, orig = _paired(y, s, y * 3.0 + rng.normal(0, 1, 600))
    assert judge(y, s, auc, var, LEVEL, original=orig).verdict == "no_shortcut"
    assert judge(y, s, auc, var, LEVEL).verdict == "no_shortcut"  # upper bound below AUROC 0.6
    y2, s2 = _scores(rng, 300, 2.0)
    a2, v2 = auroc_cov(y2, s2)
    assert judge(y2, s2, a2[0], v2[0, 0], LEVEL).verdict == "shortcut"


@pytest.mark.parametrize("verdicts, line", [
    (["shortcut", "shortcut", "degenerate"],
     "SHORTCUT: 2/3 lung-hiding trials keep the signal without the lungs (1 degenerate)"),
    (["no_shortcut", "degenerate"], "NO SHORTCUT: 0/2 lung-hiding trials keep the signal without the lungs "
                                    "(1 no_shortcut, 1 degenerate)"),
    (["degenerate", "degenerate"], "NO VERDICT: 0/2 lung-hiding trials keep the signal without the lungs "
                                   "(2 degenerate)"),
    (["inconclusive", "no_shortcut", "inverted"], "INCONCLUSIVE: 0/3 lung-hiding trials keep the signal without "
                                                  "the lungs (1 no_shortcut, 1 inverted, 1 inconclusive)"),
])
def test_the_run_ends_with_a_one_line_verdict(verdicts, line):
    from cxrray.analysis.verdict import verdict_line

    assert verdict_line(pl.DataFrame({"verdict": verdicts})) == line
