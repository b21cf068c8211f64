"""The rank machinery every AUROC statistic shares: mid-ranks with ties averaged and DeLong's placement values
(DeLong, DeLong and Clarke-Pearson 1988), the structural components both the variance (``delong``) and the exact
and permutation tests (``exact``) are built from."""

from __future__ import annotations

import numpy as np
from scipy import stats


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    return np.asarray(stats.rankdata(x, method="average"), float)


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
