"""DeLong AUROC statistics in the fast midrank form of Sun & Xu (2014).

``auroc_cov`` computes the AUROCs of k score vectors on the same cases and
their DeLong covariance in O(k (m+n) log(m+n)); CIs and paired/unpaired tests
follow. Conventions match R's pROC: CI = AUC +- z * sqrt(var) on the AUC
scale (clipped to [0, 1]); the paired test uses the covariance, the unpaired
one D = (A1 - A2) / sqrt(V1 + V2). ``naive_auroc_var`` is the O(mn) textbook
form, kept as the reference the tests compare against.
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


def auroc_cov(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their DeLong covariance (k, k) for score rows (k, N) and labels (N,)."""
    aucs, v01, v10 = placements(y, scores)
    sx = np.atleast_2d(np.cov(v01))
    sy = np.atleast_2d(np.cov(v10))
    return aucs, sx / v01.shape[1] + sy / v10.shape[1]


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


def auroc_ci(y: np.ndarray, score: np.ndarray, level: float = 0.95) -> AurocCI:
    """AUROC with its DeLong confidence interval."""
    aucs, cov = auroc_cov(y, score)
    auc, var = float(aucs[0]), float(cov[0, 0])
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * np.sqrt(max(var, 0.0))
    yb = np.asarray(y).astype(bool)
    return AurocCI(auc, var, max(0.0, auc - half), min(1.0, auc + half), int(yb.sum()), int((~yb).sum()))


@dataclass(frozen=True)
class DelongTest:
    auc1: float
    auc2: float
    stat: float  # Z (paired) or D (unpaired)
    p: float
    diff_lo: float | None = None
    diff_hi: float | None = None


def paired_test(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, level: float = 0.95) -> DelongTest:
    """Two-sided DeLong test of two correlated AUROCs on the same cases."""
    aucs, cov = auroc_cov(y, np.vstack([s1, s2]))
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 0:
        return DelongTest(float(aucs[0]), float(aucs[1]), 0.0, 1.0, float(diff), float(diff))
    z = diff / np.sqrt(var)
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return DelongTest(float(aucs[0]), float(aucs[1]), float(z), float(2 * stats.norm.sf(abs(z))),
                      float(diff - half), float(diff + half))


def unpaired_test(y1: np.ndarray, s1: np.ndarray, y2: np.ndarray, s2: np.ndarray) -> DelongTest:
    """Two-sided DeLong test of two AUROCs on independent cases.

    As in pROC: D = (A1 - A2) / sqrt(V1 + V2) against a Student t with
    Welch-Satterthwaite degrees of freedom, each sample counted by its total
    number of cases.
    """
    a1, a2 = auroc_ci(y1, s1), auroc_ci(y2, s2)
    n1, n2 = a1.n_pos + a1.n_neg, a2.n_pos + a2.n_neg
    if a1.var + a2.var <= 0:  # both AUROCs without spread (e.g. both perfect): as the paired test does
        return DelongTest(a1.auc, a2.auc, 0.0, 1.0 if a1.auc == a2.auc else 0.0)
    d = (a1.auc - a2.auc) / np.sqrt(a1.var + a2.var)
    df = (a1.var + a2.var) ** 2 / (a1.var**2 / (n1 - 1) + a2.var**2 / (n2 - 1))
    return DelongTest(a1.auc, a2.auc, float(d), float(2 * stats.t.sf(abs(d), df)))
