"""DeLong AUROC statistics in the fast midrank form of Sun & Xu (2014).

``auroc_cov`` computes the AUROCs of k score vectors on the same cases and
their DeLong covariance in O(k (m+n) log(m+n)); CIs and paired/unpaired tests
follow. Conventions match R's pROC: CI = AUC +- z * sqrt(var) on the AUC
scale (clipped to [0, 1]); the paired test uses the covariance, the unpaired
one D = (A1 - A2) / sqrt(V1 + V2). ``naive_auroc_var`` is the O(mn) textbook
form, kept as the reference the tests compare against.

Several images of one patient are not independent. Given ``groups`` (a patient id
per case), the variances and covariances are Obuchowski's (1997) clustered DeLong
estimator: placement values are summed per patient, so a patient with three images
counts as one unit of evidence. With one image per patient it equals plain DeLong.
Where a variance cannot be estimated (a single positive or negative case, or
patient), it is NaN and so is the CI: never a silent [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from cxrray.stats.exact import permutation_paired, permutation_unpaired
from cxrray.stats.ranks import _split, placements


def auroc_cov(y: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their DeLong covariance (k, k) for score rows (k, N) and labels (N,); with ``groups``
    (a cluster id per case, e.g. the patient) the clustered estimator of Obuchowski (1997)."""
    aucs, v01, v10 = placements(y, scores)
    if _clusters(groups):
        return aucs, _clustered_cov(np.asarray(y).astype(bool), np.asarray(groups), aucs, v01, v10)
    return aucs, _plain_cov(aucs, v01, v10)


def _clusters(groups: np.ndarray | None) -> bool:
    """Whether ``groups`` puts two cases in one cluster (else the clustered estimator is DeLong's own)."""
    return groups is not None and len(np.unique(np.asarray(groups))) < len(np.asarray(groups))


def _plain_cov(aucs: np.ndarray, v01: np.ndarray, v10: np.ndarray) -> np.ndarray:
    """DeLong's covariance from the placements, every case its own cluster."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sx = np.atleast_2d(np.cov(v01)) if v01.shape[1] > 1 else np.full((len(aucs), len(aucs)), np.nan)
        sy = np.atleast_2d(np.cov(v10)) if v10.shape[1] > 1 else np.full((len(aucs), len(aucs)), np.nan)
    return np.asarray(sx / v01.shape[1] + sy / v10.shape[1], float)


def _clustered_cov(y: np.ndarray, groups: np.ndarray, aucs: np.ndarray, v01: np.ndarray,
                   v10: np.ndarray) -> np.ndarray:
    """Obuchowski's clustered covariance: per cluster i the sums of the positives' placements (X_i, m_i cases)
    and of the negatives' (Y_i, n_i cases), centred at m_i A and n_i A; S10, S01 within each class over the
    clusters that have such cases, S11 between them over all clusters; cov = S10/M + S01/N + (S11 + S11')/(MN)."""
    _, cluster = np.unique(groups, return_inverse=True)
    n_clusters = cluster.max() + 1
    pos_c, neg_c = cluster[y], cluster[~y]
    m_i = np.bincount(pos_c, minlength=n_clusters).astype(float)
    n_i = np.bincount(neg_c, minlength=n_clusters).astype(float)
    k = len(aucs)
    x = np.stack([np.bincount(pos_c, weights=v01[r], minlength=n_clusters) for r in range(k)]) - m_i * aucs[:, None]
    z = np.stack([np.bincount(neg_c, weights=v10[r], minlength=n_clusters) for r in range(k)]) - n_i * aucs[:, None]
    big_m, big_n = m_i.sum(), n_i.sum()
    i10, i01, i_all = int((m_i > 0).sum()), int((n_i > 0).sum()), n_clusters
    if min(i10, i01) < 2:
        return np.full((k, k), np.nan)
    s10 = i10 / ((i10 - 1) * big_m) * (x @ x.T)
    s01 = i01 / ((i01 - 1) * big_n) * (z @ z.T)
    s11 = i_all / (i_all - 1) * (x @ z.T)
    return np.asarray(s10 / big_m + s01 / big_n + (s11 + s11.T) / (big_m * big_n), float)


def naive_auroc_var(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """O(mn) DeLong AUROC and variance from the pairwise kernel (reference implementation)."""
    pos, neg = _split(y, score)
    pos, neg = pos[0], neg[0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(auc), float(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


@dataclass(frozen=True)
class AurocCI:
    auc: float
    var: float
    lo: float
    hi: float
    n_pos: int
    n_neg: int


def auroc_ci(y: np.ndarray, score: np.ndarray, level: float = 0.95, groups: np.ndarray | None = None) -> AurocCI:
    """AUROC with its DeLong confidence interval (clustered by ``groups`` when given); NaN bounds when the
    variance cannot be estimated."""
    aucs, cov = auroc_cov(y, score, groups)
    auc, var = float(aucs[0]), float(cov[0, 0])
    yb = np.asarray(y).astype(bool)
    if not np.isfinite(var):
        return AurocCI(auc, float("nan"), float("nan"), float("nan"), int(yb.sum()), int((~yb).sum()))
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * np.sqrt(max(var, 0.0))
    return AurocCI(auc, var, max(0.0, auc - half), min(1.0, auc + half), int(yb.sum()), int((~yb).sum()))


@dataclass(frozen=True)
class DelongTest:
    auc1: float
    auc2: float
    stat: float  # Z (paired) or D (unpaired)
    p: float
    diff_lo: float | None = None
    diff_hi: float | None = None


def paired_test(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, level: float = 0.95,
                groups: np.ndarray | None = None) -> DelongTest:
    """Two-sided DeLong test of two correlated AUROCs on the same cases (clustered by ``groups`` when given).
    Without any spread in the difference (both perfect, say) the normal test cannot be used: the exact
    permutation test over patients (the two models' scores swapped per patient) gives p instead."""
    aucs, cov = auroc_cov(y, np.vstack([s1, s2]), groups)
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if not np.isfinite(var):
        return DelongTest(float(aucs[0]), float(aucs[1]), float("nan"), float("nan"))
    if var <= 1e-15:

        exact = permutation_paired(y, s1, s2, groups)
        return DelongTest(float(aucs[0]), float(aucs[1]), float("nan"), exact.p_two)
    z = diff / np.sqrt(var)
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return DelongTest(float(aucs[0]), float(aucs[1]), float(z), float(2 * stats.norm.sf(abs(z))),
                      float(diff - half), float(diff + half))


def unpaired_test(y1: np.ndarray, s1: np.ndarray, y2: np.ndarray, s2: np.ndarray,
                  groups1: np.ndarray | None = None, groups2: np.ndarray | None = None) -> DelongTest:
    """Two-sided DeLong test of two AUROCs on independent cases (each clustered by its ``groups``).

    As in pROC: D = (A1 - A2) / sqrt(V1 + V2) against a Student t with
    Welch-Satterthwaite degrees of freedom, each sample counted by its total
    number of cases (of patients, when clustered). With no spread on either side
    the exact permutation test over patients gives p.
    """
    a1, a2 = auroc_ci(y1, s1, groups=groups1), auroc_ci(y2, s2, groups=groups2)
    n1 = len(np.unique(groups1)) if groups1 is not None else a1.n_pos + a1.n_neg
    n2 = len(np.unique(groups2)) if groups2 is not None else a2.n_pos + a2.n_neg
    if not np.isfinite(a1.var + a2.var):
        return DelongTest(a1.auc, a2.auc, float("nan"), float("nan"))
    if a1.var + a2.var <= 0:  # both AUROCs without spread (e.g. both perfect): exact over patients

        exact = permutation_unpaired(y1, s1, groups1, y2, s2, groups2)
        return DelongTest(a1.auc, a2.auc, float("nan"), exact.p_two)
    d = (a1.auc - a2.auc) / np.sqrt(a1.var + a2.var)
    df = (a1.var + a2.var) ** 2 / (a1.var**2 / (n1 - 1) + a2.var**2 / (n2 - 1))
    return DelongTest(a1.auc, a2.auc, float(d), float(2 * stats.t.sf(abs(d), df)))


# --- Intervals that cover at the edges -------------------------------------------------------------------------
# DeLong's Wald interval has zero width at AUROC 0 and 1 and undercovers at small n near them (a clustered set of
# 9 + 23 patients at true AUROC 0.988 gives [1, 1] in 16 % of test sets). The score interval inverts the test
# |A - theta| <= z sqrt(V(theta)) with the variance as a function of theta (Hanley & McNeil's, symmetrised by
# Newcombe 2006, method 5), as Wilson's interval does for a proportion: it never has zero width and is skewed
# towards 0.5 near the boundaries. Clustering enters through effective sample sizes: the counts are divided by
# a design effect, the clustered DeLong variance over Hanley-McNeil's at the same counts, bounded below by the
# within-class correlation of the ranks (so a near-boundary AUROC whose placements carry no spread still pays
# for its clustering) and above by the design effect of identical images within a patient.

SCORE_METHOD = "score interval (Newcombe) with the patients' design effect"


def hm_variance(theta: np.ndarray | float, m: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """Hanley-McNeil variance of the AUROC at ``theta`` for m positives and n negatives, with Newcombe's
    symmetrised count N* = (m + n) / 2 in place of m and n in the correlation terms."""
    t = np.asarray(theta, float)
    big = (np.asarray(m, float) + np.asarray(n, float)) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(t * (1 - t) / (m * n) * (1 + (big - 1) * ((1 - t) / (2 - t) + t / (1 + t))), float)


def score_interval(auc: np.ndarray | float, m: np.ndarray | float, n: np.ndarray | float, level: float = 0.95
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The set {theta: (A - theta)^2 <= z^2 V(theta; m, n)}, by vectorised bisection (arrays broadcast)."""
    z2 = stats.norm.ppf(0.5 + level / 2) ** 2
    a = np.asarray(auc, float)
    m, n = np.broadcast_to(m, a.shape).astype(float), np.broadcast_to(n, a.shape).astype(float)

    def g(t: np.ndarray) -> np.ndarray:
        return np.asarray((a - t) ** 2 - z2 * hm_variance(t, m, n), float)

    def root(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # g(lo) > 0 >= g(hi): bisection to the sign change
        glo = g(lo) > 0
        for _ in range(60):
            mid = (lo + hi) / 2
            same = (g(mid) > 0) == glo
            lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
        return np.asarray((lo + hi) / 2, float)

    eps = 1e-12
    lower = np.where(a <= 0, 0.0, root(np.zeros_like(a), np.maximum(a - eps, 0.0)))
    upper = np.where(a >= 1, 1.0, root(np.ones_like(a), np.minimum(a + eps, 1.0)))
    return lower, upper


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


def design_effect(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None, var: float, auc: float,
                  plain: float) -> float:
    """How many images count as one: clustered DeLong variance / Hanley-McNeil's at the image counts, at least
    1 + (w - 1) ICC of the within-class ranks and DeLong's own (unclustered: ``plain``) over Hanley-McNeil's,
    and at most w times that (w: images per patient, weighted by size)."""
    y = np.asarray(y, bool)
    if groups is None:
        return 1.0
    groups = np.asarray(groups)
    lower, upper = 1.0, 1.0
    for cls in (y, ~y):
        _, g = np.unique(groups[cls], return_inverse=True)
        sizes = np.bincount(g).astype(float)
        w = float((sizes**2).sum() / sizes.sum())
        icc = _rank_icc(stats.rankdata(np.asarray(score, float)[cls]), groups[cls])
        lower, upper = max(lower, 1 + (w - 1) * icc), max(upper, w)
    hm = float(hm_variance(auc, y.sum(), (~y).sum()))
    own = plain / hm if np.isfinite(plain) and plain > 0 and hm > 0 else 1.0  # unequal spreads: above 1
    lower, upper = max(lower, own), upper * max(own, 1.0)  # the clustering on top of DeLong's own, never below
    ratio = var / hm if np.isfinite(var) and var > 0 and hm > 0 else upper
    return float(np.clip(max(ratio, lower), 1.0, upper))


@dataclass(frozen=True)
class AurocInterval:
    """An AUROC with the interval the verdicts read: the clustered DeLong variance, the design effect, the
    score interval at ``level``, the patients per class, and the method's name for the tables."""

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
    method: str = SCORE_METHOD

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
    """AUROC with the score interval at ``level``, clustered by ``groups`` (the patients) through the design
    effect; never zero width from a finite sample."""
    y = np.asarray(y, bool)
    aucs, v01, v10 = placements(y, score)  # once: the clustered and the plain variance both read them
    plain = float(_plain_cov(aucs, v01, v10)[0, 0])
    var = float(_clustered_cov(y, np.asarray(groups), aucs, v01, v10)[0, 0]) if _clusters(groups) else plain
    auc = float(aucs[0])
    deff = design_effect(y, score, groups, var, auc, plain)
    lo, hi = score_interval(auc, y.sum() / deff, (~y).sum() / deff, level)
    pp, pn = patients_per_class(y, groups)
    return AurocInterval(auc, var, float(lo), float(hi), level, deff, int(y.sum()), int((~y).sum()), pp, pn)


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
    share none. A side without spread (AUROC 0 or 1) takes its score interval's variance (no zero width). The
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
    if not va > 1e-15:
        va = auroc_interval(y[a], score[a], groups[a], level).floor_var
    if not vb > 1e-15:
        vb = auroc_interval(y[b], score[b], groups[b], level).floor_var
    var = va + vb - 2 * rho * np.sqrt(va * vb)
    diff = auc_a - auc_b
    se = np.sqrt(max(var, 1e-12))
    df = max(min(*patients_per_class(y[a], groups[a]), *patients_per_class(y[b], groups[b])) - 1, 1)
    t = stats.t.ppf(0.5 + level / 2, df)
    return diff, diff - t * se, diff + t * se, float(2 * stats.t.sf(abs(diff) / se, df))
