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


def _cluster_sums(y: np.ndarray, groups: np.ndarray, aucs: np.ndarray, v01: np.ndarray, v10: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cluster i the sums of the positives' placements (X_i, m_i cases) and of the negatives' (Y_i, n_i
    cases), centred at m_i A and n_i A (rows: the score vectors), with m_i and n_i."""
    _, cluster = np.unique(groups, return_inverse=True)
    n_clusters = cluster.max() + 1
    pos_c, neg_c = cluster[y], cluster[~y]
    m_i = np.bincount(pos_c, minlength=n_clusters).astype(float)
    n_i = np.bincount(neg_c, minlength=n_clusters).astype(float)
    k = len(aucs)
    x = np.stack([np.bincount(pos_c, weights=v01[r], minlength=n_clusters) for r in range(k)]) - m_i * aucs[:, None]
    z = np.stack([np.bincount(neg_c, weights=v10[r], minlength=n_clusters) for r in range(k)]) - n_i * aucs[:, None]
    return x, z, m_i, n_i


def _clustered_terms(y: np.ndarray, groups: np.ndarray, aucs: np.ndarray, v01: np.ndarray, v10: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Obuchowski's clustered covariance in its three terms, S10/M (the positives' clusters), S01/N (the
    negatives') and (S11 + S11')/(MN) (patients holding both labels); NaN where a class has fewer than 2
    clusters."""
    x, z, m_i, n_i = _cluster_sums(y, groups, aucs, v01, v10)
    k = len(aucs)
    big_m, big_n = m_i.sum(), n_i.sum()
    i10, i01, i_all = int((m_i > 0).sum()), int((n_i > 0).sum()), len(m_i)
    if min(i10, i01) < 2:
        nan = np.full((k, k), np.nan)
        return nan, nan, nan
    s10 = i10 / ((i10 - 1) * big_m) * (x @ x.T)
    s01 = i01 / ((i01 - 1) * big_n) * (z @ z.T)
    s11 = i_all / (i_all - 1) * (x @ z.T)
    return s10 / big_m, s01 / big_n, (s11 + s11.T) / (big_m * big_n)


def _clustered_cov(y: np.ndarray, groups: np.ndarray, aucs: np.ndarray, v01: np.ndarray,
                   v10: np.ndarray) -> np.ndarray:
    """Obuchowski's clustered covariance: S10/M + S01/N + (S11 + S11')/(MN) (``_clustered_terms``)."""
    pos, neg, both = _clustered_terms(y, groups, aucs, v01, v10)
    return np.asarray(pos + neg + both, float)


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
