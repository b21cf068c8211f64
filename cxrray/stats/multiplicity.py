"""Adjusting a family of p-values for multiple comparisons (Bonferroni; Holm's step-down, uniformly more
powerful at the same family-wise error)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bonferroni(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """p x m, capped at 1."""
    values = np.asarray(p, float)
    return np.asarray(np.minimum(values * len(values), 1.0))


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: sorted p_(i) x (m - i + 1), made monotone, capped at 1."""
    values = np.asarray(p, float)
    m = len(values)
    order = np.argsort(values, kind="stable")
    adj = np.minimum(np.maximum.accumulate(values[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = adj
    return out
