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


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    return stats.rankdata(x, method="average")


def _split(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != y.shape[0]:
        raise ValueError(f"scores have {scores.shape[1]} cases, labels {y.shape[0]}")
    if y.all() or (~y).all():
        raise ValueError("AUROC needs both positive and negative cases")
    return scores[:, y], scores[:, ~y]


def placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs (k,) and DeLong placement values of positives (k, m) and negatives (k, n)."""
    pos, neg = _split(y, scores)
    m, n = pos.shape[1], neg.shape[1]
    k = pos.shape[0]
    tx = np.empty((k, m))
    ty = np.empty((k, n))
    tz = np.empty((k, m + n))
    for r in range(k):
        tx[r] = _midrank(pos[r])
        ty[r] = _midrank(neg[r])
        tz[r] = _midrank(np.concatenate([pos[r], neg[r]]))
    aucs = tz[:, :m].sum(axis=1) / m / n - (m + 1.0) / 2.0 / n
    v01 = (tz[:, :m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # ... and of the negatives
    return aucs, v01, v10


def auroc_cov(y: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their DeLong covariance (k, k) for score rows (k, N) and labels (N,); with ``groups``
    (a cluster id per case, e.g. the patient) the clustered estimator of Obuchowski (1997)."""
    aucs, v01, v10 = placements(y, scores)
    if groups is not None and len(np.unique(np.asarray(groups))) < len(np.asarray(groups)):
        return aucs, _clustered_cov(np.asarray(y).astype(bool), np.asarray(groups), aucs, v01, v10)
    with np.errstate(invalid="ignore", divide="ignore"):
        sx = np.atleast_2d(np.cov(v01)) if v01.shape[1] > 1 else np.full((len(aucs), len(aucs)), np.nan)
        sy = np.atleast_2d(np.cov(v10)) if v10.shape[1] > 1 else np.full((len(aucs), len(aucs)), np.nan)
    return aucs, sx / v01.shape[1] + sy / v10.shape[1]


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
    return s10 / big_m + s01 / big_n + (s11 + s11.T) / (big_m * big_n)


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
    Without any spread in the difference the AUROCs are known exactly: p is 1 when they are equal, else 0."""
    aucs, cov = auroc_cov(y, np.vstack([s1, s2]), groups)
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if not np.isfinite(var):
        return DelongTest(float(aucs[0]), float(aucs[1]), float("nan"), float("nan"))
    if var <= 1e-15:
        return DelongTest(float(aucs[0]), float(aucs[1]), 0.0, 1.0 if abs(diff) < 1e-12 else 0.0, float(diff),
                          float(diff))
    z = diff / np.sqrt(var)
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return DelongTest(float(aucs[0]), float(aucs[1]), float(z), float(2 * stats.norm.sf(abs(z))),
                      float(diff - half), float(diff + half))


def unpaired_test(y1: np.ndarray, s1: np.ndarray, y2: np.ndarray, s2: np.ndarray,
                  groups1: np.ndarray | None = None, groups2: np.ndarray | None = None) -> DelongTest:
    """Two-sided DeLong test of two AUROCs on independent cases (each clustered by its ``groups``).

    As in pROC: D = (A1 - A2) / sqrt(V1 + V2) against a Student t with
    Welch-Satterthwaite degrees of freedom, each sample counted by its total
    number of cases (of patients, when clustered).
    """
    a1, a2 = auroc_ci(y1, s1, groups=groups1), auroc_ci(y2, s2, groups=groups2)
    n1 = len(np.unique(groups1)) if groups1 is not None else a1.n_pos + a1.n_neg
    n2 = len(np.unique(groups2)) if groups2 is not None else a2.n_pos + a2.n_neg
    if not np.isfinite(a1.var + a2.var):
        return DelongTest(a1.auc, a2.auc, float("nan"), float("nan"))
    if a1.var + a2.var <= 0:  # both AUROCs without spread (e.g. both perfect): as the paired test does
        return DelongTest(a1.auc, a2.auc, 0.0, 1.0 if a1.auc == a2.auc else 0.0)
    d = (a1.auc - a2.auc) / np.sqrt(a1.var + a2.var)
    df = (a1.var + a2.var) ** 2 / (a1.var**2 / (n1 - 1) + a2.var**2 / (n2 - 1))
    return DelongTest(a1.auc, a2.auc, float(d), float(2 * stats.t.sf(abs(d), df)))
