"""The AUROC interval every verdict reads: a score interval on a per-class variance model that covers at the
edges and never falls below DeLong's own variance.

DeLong's Wald interval has zero width at AUROC 0 and 1 and undercovers at small n near them (a clustered set of
9 + 23 patients at true AUROC 0.988 gives [1, 1] in 16 % of test sets). The score interval inverts the test
|A - theta| <= z sqrt(V(theta)) with the variance as a function of theta, as Wilson's interval does for a
proportion: it never has zero width and is skewed towards 0.5 near the boundaries. V(theta) is Hanley &
McNeil's variance split into its terms (the pair term, the negatives' and the positives'), each class's term
scaled by a multiplier measured at the estimate:

- its *design effect*: the clustered (Obuchowski) class term over DeLong's own, between 1 + (w - 1) ICC of the
  class's within-patient ranks and w (its images per patient, size-weighted): one class's clustering inflates
  only its own term;

and the whole by
- its *shape*: DeLong's own (unclustered) variance over Hanley-McNeil's, at least ``SHAPE_FLOOR`` (a model's
  classes rarely share one spread: with sd 3 vs 1 DeLong's variance is 1.4x Hanley-McNeil's, which had taken its
  place; near AUROC 0.95-0.99 it is below it, and the floor keeps placements without spread from a zero-width
  interval). Per class the ratio is unstable near AUROC 1 (the negatives' term shrinks as (1 - A)^2);
- a factor <= 1 for patients holding both labels (Obuchowski's cross term, negative when a patient's images
  share a score level);

and V at the estimate is never below DeLong's own unclustered variance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cxrray.stats.delong import _clustered_terms, _clusters, _plain_cov
from cxrray.stats.ranks import placements

SCORE_METHOD = "score interval on DeLong's variance per class with the patients' design effects"
SHAPE_FLOOR = 1.0  # never below Hanley-McNeil's either: 0.5 covered 86-90 % at AUROC 0.95-0.99 with sd 3 vs 1


def hm_terms(theta: np.ndarray | float, m: np.ndarray | float, n: np.ndarray | float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hanley-McNeil's variance at ``theta`` for m positives and n negatives in its three terms: the pair term
    theta (1 - theta) / mn, the negatives' (m - 1)(Q1 - theta^2) / mn and the positives' (n - 1)(Q2 - theta^2) / mn."""
    t = np.asarray(theta, float)
    m, n = np.asarray(m, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q1 = t * (1 - t) ** 2 / (2 - t)
        q2 = t * t * (1 - t) / (1 + t)
        return t * (1 - t) / (m * n), (m - 1) * q1 / (m * n), (n - 1) * q2 / (m * n)


def hm_variance(theta: np.ndarray | float, m: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """Hanley-McNeil variance of the AUROC at ``theta`` for m positives and n negatives, with Newcombe's
    symmetrised count N* = (m + n) / 2 in place of m and n in the correlation terms (``plan``'s and pooled
    intervals, where only counts and one design effect are known)."""
    t = np.asarray(theta, float)
    big = (np.asarray(m, float) + np.asarray(n, float)) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(t * (1 - t) / (m * n) * (1 + (big - 1) * ((1 - t) / (2 - t) + t / (1 + t))), float)


def invert(auc: np.ndarray | float, variance: Callable[[np.ndarray], np.ndarray], level: float = 0.95
           ) -> tuple[np.ndarray, np.ndarray]:
    """The set {theta: (A - theta)^2 <= z^2 V(theta)}, by vectorised bisection (``variance`` broadcasts)."""
    z2 = stats.norm.ppf(0.5 + level / 2) ** 2
    a = np.asarray(auc, float)

    def g(t: np.ndarray) -> np.ndarray:
        return np.asarray((a - t) ** 2 - z2 * variance(t), float)

    def root(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # g(lo) > 0 >= g(hi): bisection to the sign change
        glo = g(lo) > 0
        for _ in range(60):
            mid = (lo + hi) / 2
            same = (g(mid) > 0) == glo
            lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
        return np.asarray((lo + hi) / 2, float)

    eps = 1e-12
    # both ends in one bisection (a leading axis of 2): half the calls of g, each element's steps unchanged
    lower, upper = root(np.stack([np.zeros_like(a), np.ones_like(a)]),
                        np.stack([np.maximum(a - eps, 0.0), np.minimum(a + eps, 1.0)]))
    return np.where(a <= 0, 0.0, lower), np.where(a >= 1, 1.0, upper)


def score_interval(auc: np.ndarray | float, m: np.ndarray | float, n: np.ndarray | float, level: float = 0.95
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's score interval (method 5) at effective counts m and n (arrays broadcast)."""
    a = np.asarray(auc, float)
    m, n = np.broadcast_to(m, a.shape).astype(float), np.broadcast_to(n, a.shape).astype(float)
    return invert(a, lambda t: hm_variance(t, m, n), level)


def _rank_icc(ranks: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA intraclass correlation of ranks within patients (0 when not estimable)."""
    _, g = np.unique(groups, return_inverse=True)
    sizes = np.bincount(g).astype(float)
    k, n = len(sizes), len(ranks)
    if k < 2 or n <= k:
        return 0.0
    means = np.bincount(g, weights=ranks) / sizes
    msb = (sizes * (means - ranks.mean()) ** 2).sum() / (k - 1)
    msw = ((ranks - means[g]) ** 2).sum() / (n - k)
    n0 = (n - (sizes**2).sum() / n) / (k - 1)
    denom = msb + (n0 - 1) * msw
    return float(np.clip((msb - msw) / denom, 0.0, 1.0)) if denom > 0 else 1.0


@dataclass(frozen=True)
class VarianceModel:
    """V(theta) of the module docstring: Hanley-McNeil's terms at the image counts ``m`` and ``n``, the
    positives' times ``pos``, the negatives' times ``neg`` (their design effects), the pair term times ``pair``
    (both), all times ``scale`` (the shape, patients holding both labels, the floor at DeLong's own variance)."""

    m: float
    n: float
    pos: float
    neg: float
    pair: float
    scale: float

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        lead, neg, pos = hm_terms(theta, self.m, self.n)
        return np.asarray(self.scale * (self.pair * lead + self.neg * neg + self.pos * pos), float)


def _design(score: np.ndarray, groups: np.ndarray, cls: np.ndarray, own: float, clustered: float) -> float:
    """One class's design effect: its clustered term over DeLong's own, within [1 + (w - 1) ICC, w]."""
    _, g = np.unique(groups[cls], return_inverse=True)
    sizes = np.bincount(g).astype(float)
    w = float((sizes**2).sum() / sizes.sum()) if len(sizes) else 1.0
    if w <= 1.0:
        return 1.0
    icc = _rank_icc(stats.rankdata(score[cls]), groups[cls])
    ratio = clustered / own if np.isfinite(clustered) and np.isfinite(own) and own > 0 else 0.0
    return float(np.clip(max(ratio, 1 + (w - 1) * icc), 1.0, w))


def variance_model(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None) -> tuple[VarianceModel, float, float]:
    """The variance model of one AUROC (see the module docstring), the AUROC and its clustered DeLong variance
    (Obuchowski's; DeLong's own without clusters; NaN where not estimable)."""
    y = np.asarray(y, bool)
    score = np.asarray(score, float)
    aucs, v01, v10 = placements(y, score)
    auc = float(aucs[0])
    m, n = int(y.sum()), int((~y).sum())
    plain = float(_plain_cov(aucs, v01, v10)[0, 0])
    hm = float(sum(hm_terms(auc, m, n)))
    shape = max(plain / hm, SHAPE_FLOOR) if np.isfinite(plain) and hm > 0 else 1.0
    d_pos = d_neg = scale = 1.0
    var = plain
    if _clusters(groups):
        g = np.asarray(groups)
        k_pos, k_neg, both = (float(t[0, 0]) for t in _clustered_terms(y, g, aucs, v01, v10))
        var = k_pos + k_neg + both
        own_pos = float(np.var(v01[0], ddof=1) / m) if m > 1 else float("nan")
        own_neg = float(np.var(v10[0], ddof=1) / n) if n > 1 else float("nan")
        d_pos, d_neg = _design(score, g, y, own_pos, k_pos), _design(score, g, ~y, own_neg, k_neg)
        if np.isfinite(var) and k_pos + k_neg > 0:
            scale = float(np.clip(var / (k_pos + k_neg), 0.0, 1.0))
    model = VarianceModel(m, n, d_pos, d_neg, d_pos * d_neg, shape * scale)
    at = float(model(np.asarray(auc)))
    if np.isfinite(plain) and at < plain:  # never below DeLong's own unclustered variance
        model = VarianceModel(m, n, d_pos, d_neg, d_pos * d_neg, model.scale * plain / at if at > 0 else 1.0)
    return model, auc, var


@dataclass(frozen=True)
class AurocInterval:
    """An AUROC with the interval the verdicts read: the clustered DeLong variance, the design effect (the
    variance model over Newcombe's Hanley-McNeil variance at the image counts, at the interval's centre: how
    many images count as one), the score interval at ``level``, the patients per class, and the method's name."""

    auc: float
    var: float  # clustered DeLong (Obuchowski); NaN where not estimable
    lo: float
    hi: float
    level: float
    deff: float
    n_pos: int
    n_neg: int
    patients_pos: int
    patients_neg: int
    p_chance: float = float("nan")  # the score test of AUROC 0.5 on the same variance model: < 1 - level iff the
    method: str = SCORE_METHOD      # interval excludes 0.5

    @property
    def floor_var(self) -> float:
        """A variance never below what the interval's width implies (for drops and ratios built on it)."""
        half = (self.hi - self.lo) / 2 / stats.norm.ppf(0.5 + self.level / 2)
        return float(max(self.var if np.isfinite(self.var) else 0.0, half**2))


def patients_per_class(y: np.ndarray, groups: np.ndarray | None) -> tuple[int, int]:
    """Distinct patients with a positive image and with a negative image."""
    y = np.asarray(y, bool)
    if groups is None:
        return int(y.sum()), int((~y).sum())
    g = np.asarray(groups)
    return len(np.unique(g[y])), len(np.unique(g[~y]))


def auroc_interval(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None = None,
                   level: float = 0.95) -> AurocInterval:
    """AUROC with the score interval at ``level`` on its variance model, clustered by ``groups`` (the
    patients); never zero width from a finite sample, never narrower than DeLong's own."""
    y = np.asarray(y, bool)
    model, auc, var = variance_model(y, score, groups)
    lo, hi = (float(x) for x in invert(auc, model, level))
    centre = float(np.clip((lo + hi) / 2, 1e-6, 1 - 1e-6))
    hm = float(hm_variance(centre, model.m, model.n))
    deff = float(model(np.asarray(centre))) / hm if hm > 0 else 1.0
    pp, pn = patients_per_class(y, groups)
    at_chance = float(model(np.asarray(0.5)))
    p = float(2 * stats.norm.sf(abs(auc - 0.5) / np.sqrt(at_chance))) if at_chance > 0 else float(auc == 0.5)
    return AurocInterval(auc, var, lo, hi, level, deff, int(y.sum()), int((~y).sum()), pp, pn, p)


def patient_influence(y: np.ndarray, score: np.ndarray, groups: np.ndarray, patients: np.ndarray
                      ) -> tuple[float, np.ndarray]:
    """AUROC of a set of images and each patient's influence on it (its placement deviations, positives over M
    and negatives over N), indexed by ``patients`` (the sorted ids of a population that may be larger than this
    set): the sum of products of two such vectors estimates the covariance of two AUROCs computed on overlapping
    sets of patients (Obuchowski's estimator where they are the same set; zero where they share none)."""
    y = np.asarray(y, bool)
    aucs, v01, v10 = placements(y, score)
    auc = float(aucs[0])
    idx = np.searchsorted(patients, np.asarray(groups))
    infl = (np.bincount(idx[y], weights=v01[0] - auc, minlength=len(patients)) / y.sum()
            + np.bincount(idx[~y], weights=v10[0] - auc, minlength=len(patients)) / (~y).sum())
    return auc, infl


def clustered_difference(y: np.ndarray, score: np.ndarray, groups: np.ndarray, a: np.ndarray, b: np.ndarray,
                         level: float = 0.95) -> tuple[float, float, float, float]:
    """AUROC(images ``a``) - AUROC(images ``b``) of one model, its interval and two-sided p, with the patients
    as the unit: paired through the patients both sets share (a patient's AP and PA images), unpaired where they
    share none. A side without spread (AUROC 0 or 1), and each side of an unpaired comparison, takes at least its
    score interval's variance: 10 + 10 clustered patients against a rest of 200 had a size of 9.4 %, the small
    side's influence variance being too small too often (now 2.4-4.4 % from 10 + 10 against 40 to 200). The
    reference is Student's t with (fewest patients of a class on either side - 1) degrees of freedom: a clustered
    variance from 10 patients is itself uncertain, and the normal test's size there was 8-10 %."""
    groups = np.asarray(groups).astype(str)
    patients = np.unique(groups[a | b])
    auc_a, ia = patient_influence(y[a], score[a], groups[a], patients)
    auc_b, ib = patient_influence(y[b], score[b], groups[b], patients)
    k = len(patients)
    factor = k / (k - 1) if k > 1 else np.nan
    va, vb, cab = factor * ia @ ia, factor * ib @ ib, factor * ia @ ib
    rho = cab / np.sqrt(va * vb) if va > 1e-15 and vb > 1e-15 else 0.0
    paired = bool(np.intersect1d(groups[a], groups[b]).size)
    if not paired or not va > 1e-15:  # independent sides: a small one's variance is at least its interval's
        va = max(va, auroc_interval(y[a], score[a], groups[a], level).floor_var)
    if not paired or not vb > 1e-15:
        vb = max(vb, auroc_interval(y[b], score[b], groups[b], level).floor_var)
    var = va + vb - 2 * rho * np.sqrt(va * vb)
    diff = auc_a - auc_b
    se = np.sqrt(max(var, 1e-12))
    df = max(min(*patients_per_class(y[a], groups[a]), *patients_per_class(y[b], groups[b])) - 1, 1)
    t = stats.t.ppf(0.5 + level / 2, df)
    return diff, diff - t * se, diff + t * se, float(2 * stats.t.sf(abs(diff) / se, df))
