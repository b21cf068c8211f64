"""The shortcut verdict for one lung-hiding trial: a rule with an effect size, sound at the edges.

Inputs: the hidden representation's test AUROC ``A_h`` with its variance (clustered DeLong), the matched
``original`` trial's ``A_o`` and their paired covariance, the case counts, and whether either model is
degenerate. Every interval is at the Bonferroni-corrected level ``1 - alpha / m`` (m: the lung-hiding trials
tested together). The rule, in order:

1. ``degenerate``: the hidden model did not learn (constant scores, or one class while its training loss
   never beat chance): no claim at all.
2. Above / below chance: the corrected DeLong CI of ``A_h`` excludes 0.5. When DeLong cannot be trusted
   (fewer than ``SMALL`` positive or negative test images, or no spread: a zero or undefined variance), an
   exact one-sided Mann-Whitney test of ``A_h`` against 0.5 decides instead (p < alpha / m).
3. ``inverted``: significantly *below* chance: the representation carries the signal, reversed.
4. ``shortcut``: above chance, and the hidden model keeps an effect: the retained fraction
   ``R = (A_h - 0.5) / (A_o - 0.5)`` is at least ``R_SHORTCUT`` (Sadre et al. compare with the drop from
   ``original``); without a usable original (missing, degenerate, or not above chance), ``A_h`` itself must
   reach ``AUROC_EFFECT``.
5. ``no_shortcut``: the signal is lost with confidence: the upper bound of ``R``'s CI is below ``R_SHORTCUT``
   (or, without a usable original, ``A_h``'s upper bound is below ``AUROC_EFFECT``).
6. ``inconclusive``: anything else (wide intervals, partial retention).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy import stats

SMALL = 10  # fewer positive or negative test images than this: the exact test decides, not DeLong's normal CI
R_SHORTCUT = 0.5  # a shortcut keeps at least half of the original's signal above chance without the lungs
AUROC_EFFECT = 0.6  # without a usable original: the smallest AUROC called an effect
VERDICTS = ("shortcut", "no_shortcut", "inverted", "degenerate", "inconclusive")
RULE = (f"verdict per lung-hiding trial at the Bonferroni-corrected level: degenerate (the model did not learn) "
        f"> inverted (AUROC significantly below 0.5) > shortcut (significantly above 0.5 and retained fraction "
        f"(AUROC_hidden - 0.5) / (AUROC_original - 0.5) >= {R_SHORTCUT}) > no_shortcut (the retained fraction's "
        f"upper bound < {R_SHORTCUT}) > inconclusive; fewer than {SMALL} positive or negative test images, or no "
        f"spread, are judged by an exact one-sided Mann-Whitney test; without a usable original AUROC "
        f"{AUROC_EFFECT} is the effect")


@dataclass(frozen=True)
class Verdict:
    verdict: str
    test: str  # "delong" or "exact" (Mann-Whitney)
    p_above: float  # one-sided p that A_h > 0.5
    p_below: float  # one-sided p that A_h < 0.5
    diff: float  # A_o - A_h (the drop from the original), NaN without an original
    diff_lo: float
    diff_hi: float
    retained: float  # (A_h - 0.5) / (A_o - 0.5), NaN without a usable original
    retained_lo: float
    retained_hi: float

    def row(self) -> dict:
        return asdict(self)


def exact_p(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """One-sided exact Mann-Whitney p-values (positives score higher; lower), i.e. of AUROC > 0.5 and < 0.5."""
    pos, neg = score[y], score[~y]
    method = "exact" if len(np.unique(score)) == len(score) else "asymptotic"  # exact assumes no ties
    above = stats.mannwhitneyu(pos, neg, alternative="greater", method=method).pvalue
    below = stats.mannwhitneyu(pos, neg, alternative="less", method=method).pvalue
    return float(above), float(below)


def judge(y: np.ndarray, score: np.ndarray, auc: float, var: float, level: float, *, degenerate: str = "",
          original: tuple[float, float, float] | None = None) -> Verdict:
    """The verdict for one lung-hiding trial. ``original``: (A_o, var_o, cov(A_h, A_o)) of the matched
    ``original`` trial on the same test images (paired), or None when there is no usable one."""
    alpha = 1 - level
    z = stats.norm.ppf(1 - alpha / 2)
    y = np.asarray(y, bool)
    small = min(y.sum(), (~y).sum()) < SMALL or not np.isfinite(var) or var <= 0
    if small:
        test = "exact"
        p_above, p_below = exact_p(y, np.asarray(score, float))
    else:
        test = "delong"
        p_above = float(stats.norm.sf((auc - 0.5) / np.sqrt(var)))
        p_below = float(stats.norm.cdf((auc - 0.5) / np.sqrt(var)))
    nan = float("nan")
    diff = diff_lo = diff_hi = retained = r_lo = r_hi = nan
    usable = original is not None and original[0] > 0.5
    if original is not None:
        a_o, var_o, cov = original
        diff = a_o - auc
        var_d = var_o + var - 2 * cov
        half = z * np.sqrt(var_d) if np.isfinite(var_d) and var_d > 0 else 0.0 if np.isfinite(var_d) else nan
        diff_lo, diff_hi = diff - half, diff + half
    if usable:
        a_o, var_o, cov = original
        d = a_o - 0.5
        retained = (auc - 0.5) / d
        var_r = var / d**2 + (auc - 0.5) ** 2 * var_o / d**4 - 2 * (auc - 0.5) * cov / d**3  # delta method
        half = z * np.sqrt(var_r) if np.isfinite(var_r) and var_r > 0 else 0.0 if np.isfinite(var_r) else nan
        r_lo, r_hi = retained - half, retained + half
    if degenerate:
        verdict = "degenerate"
    elif p_below < alpha:
        verdict = "inverted"
    elif p_above < alpha and (retained >= R_SHORTCUT if usable else auc >= AUROC_EFFECT):
        verdict = "shortcut"
    elif (r_hi < R_SHORTCUT) if usable else (not small and auc + z * np.sqrt(var) < AUROC_EFFECT):
        verdict = "no_shortcut"
    else:
        verdict = "inconclusive"
    return Verdict(verdict, test, p_above, p_below, diff, diff_lo, diff_hi, retained, r_lo, r_hi)


def verdict_line(findings: pl.DataFrame) -> str:
    """The study's answer in one line, from the per-trial verdicts of ``shortcut_findings``: SHORTCUT when any
    lung-hiding trial keeps the signal, NO SHORTCUT when every usable one rules it out, NO VERDICT when no
    model learned, else INCONCLUSIVE; then the counts."""
    if findings.is_empty():
        return "NO VERDICT: no lung-hiding trial in this run"
    n = dict(findings.group_by("verdict").len().iter_rows())
    total, usable = findings.height, findings.height - n.get("degenerate", 0)
    if n.get("shortcut"):
        head = "SHORTCUT"
    elif usable == 0:
        head = "NO VERDICT"
    elif n.get("no_shortcut", 0) == usable:
        head = "NO SHORTCUT"
    else:
        head = "INCONCLUSIVE"
    rest = ", ".join(f"{n[v]} {v}" for v in VERDICTS[1:] if n.get(v))
    return (f"{head}: {n.get('shortcut', 0)}/{total} lung-hiding trials keep the signal without the lungs"
            + (f" ({rest})" if rest else ""))
