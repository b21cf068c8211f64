"""Calibration statistics of positive-class probabilities, patients as the unit: the expected calibration error
(ECE) and what a calibrated model would show on the same scores (consistency resampling, one uniform per patient),
the logistic recalibration intercept and slope with patient-clustered sandwich intervals, and the test's operating
characteristics on calibrated models (``calibration_oc``). Pure functions of arrays; the step ``calibration``
(``cxrray/analysis/calibration.py``) applies them per trial."""

from __future__ import annotations

import numpy as np
from scipy import stats

BINS = 10
BOOT = 1000  # bootstrap and null resamples


def bin_stats(y: np.ndarray, p: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of ``p``: (count, mean probability, fraction positive); empty bins have NaN means."""
    k = np.clip((np.asarray(p) * bins).astype(int), 0, bins - 1)
    n = np.bincount(k, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(k, weights=p, minlength=bins) / n
        freq = np.bincount(k, weights=np.asarray(y, float), minlength=bins) / n
    return n, conf, freq


def ece(y: np.ndarray, p: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of positive-class probabilities ``p`` against outcomes ``y``."""
    n, conf, freq = bin_stats(y, p, bins)
    keep = n > 0
    return float((n[keep] * np.abs(conf[keep] - freq[keep])).sum() / n.sum())


def null_eces(p: np.ndarray, patients: np.ndarray, rng: np.random.Generator, draws: int = BOOT,
              bins: int = BINS) -> np.ndarray:
    """ECEs of ``draws`` label sets drawn from the probabilities themselves, one uniform per patient (vectorised:
    the bins depend on ``p`` only)."""
    k = np.clip((p * bins).astype(int), 0, bins - 1)
    n = np.bincount(k, minlength=bins).astype(float)
    conf = np.bincount(k, weights=p, minlength=bins)
    _, patient = np.unique(patients, return_inverse=True)
    onehot = np.zeros((len(p), bins), np.float32)
    onehot[np.arange(len(p)), k] = 1.0
    out = np.empty(draws)
    for i in range(0, draws, 250):
        u = rng.random((min(250, draws - i), patient.max() + 1))[:, patient]
        hits = (u < p).astype(np.float32) @ onehot
        out[i:i + len(u)] = np.abs(conf - hits).sum(1) / n.sum()
    return out


def recalibration(y: np.ndarray, p: np.ndarray, patients: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Calibration intercept (slope fixed at 1) and slope of a logistic recalibration on logit p, each with its
    cluster-robust (patient) Wald interval; NaN where the fit does not exist (one class, no spread)."""
    x = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    z = stats.norm.ppf(0.5 + level / 2)
    nan = {"intercept": np.nan, "intercept_lo": np.nan, "intercept_hi": np.nan, "slope": np.nan,
           "slope_lo": np.nan, "slope_hi": np.nan}
    if y.all() or not y.any() or np.ptp(x) == 0:
        return nan
    out: dict[str, float] = {}
    for name, design, offset, idx in (("intercept", np.ones((len(x), 1)), x, 0),
                                      ("slope", np.column_stack([np.ones_like(x), x]), np.zeros_like(x), 1)):
        beta, cov = _logistic(design, offset, y.astype(float), patients)
        se = np.sqrt(cov[idx, idx]) if np.isfinite(cov[idx, idx]) and cov[idx, idx] >= 0 else np.nan
        b = float(beta[idx])
        out |= {name: b, f"{name}_lo": b - z * se, f"{name}_hi": b + z * se}
    return out


def _logistic(x: np.ndarray, offset: np.ndarray, y: np.ndarray, groups: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Newton-Raphson logistic regression with an offset; the sandwich covariance clustered by ``groups``."""
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        mu = 1 / (1 + np.exp(-np.clip(x @ beta + offset, -30, 30)))
        hess = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(hess, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return beta, np.full((x.shape[1],) * 2, np.nan)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    mu = 1 / (1 + np.exp(-np.clip(x @ beta + offset, -30, 30)))
    bread = np.linalg.pinv(x.T @ (x * (mu * (1 - mu))[:, None]))
    _, g = np.unique(groups, return_inverse=True)
    score = np.stack([np.bincount(g, weights=x[:, j] * (y - mu)) for j in range(x.shape[1])], axis=1)
    n_g = score.shape[0]
    meat = score.T @ score * (n_g / (n_g - 1) if n_g > 1 else np.nan)
    return beta, bread @ meat @ bread


def calibration_test(y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int = 0,
                     boot: int = BOOT) -> dict[str, float]:
    """ECE, what a calibrated model would show on these scores (median and 95th percentile of the per-patient
    null), the consistency-resampling p-value, and the intercept and slope with their patient-clustered CIs."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(y, bool), np.clip(np.asarray(p, float), 0.0, 1.0)
    observed = ece(y, p)
    null = null_eces(p, np.asarray(patients), rng, boot)
    return {"n": len(y), "patients": len(np.unique(patients)), "ece": observed,
            "ece_if_calibrated": float(np.median(null)), "ece_if_calibrated_95": float(np.percentile(null, 95)),
            "p": float((1 + (null >= observed - 1e-12).sum()) / (boot + 1))} | recalibration(y, p, patients)


def calibration_oc(patients: int, images: int, reps: int, seed: int = 0) -> dict[str, float]:
    """A calibrated model whose patients share label and score: how often the calibration test flags it, and how
    often the intercept's and slope's intervals cover 0 and 1."""
    rng = np.random.default_rng(seed)
    flags = cover_i = cover_s = 0
    for k in range(reps):
        p = rng.beta(2, 2, patients)
        y = rng.random(patients) < p
        sizes = rng.integers(1, images + 1, patients)
        pid = np.repeat(np.arange(patients), sizes)
        r = calibration_test(y[pid], p[pid], pid, seed=k, boot=199)
        flags += r["p"] < 0.05
        cover_i += r["intercept_lo"] <= 0 <= r["intercept_hi"]
        cover_s += r["slope_lo"] <= 1 <= r["slope_hi"]
    return {"false_flags": flags / reps, "cover_intercept": cover_i / reps, "cover_slope": cover_s / reps}
