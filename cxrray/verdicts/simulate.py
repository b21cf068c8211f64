"""Test sets with known truth, for the operating characteristics of every verdict and interval.

``draw`` makes one clustered test set: patients with a label each, 1 to ``images`` images per patient, and two
models' scores (a hidden representation's and the original's) whose true AUROCs are given: score = mu * y +
patient effect (variance ``icc``) + image noise (variance 1 - icc), mu = sqrt(2) Phi^-1(AUROC), so the AUROC of
an image pair from two patients is exactly the one asked for; AUROC 1.0 separates the classes completely. The
two models share a correlation ``rho`` of their patient effects and noise (they saw the same images). Used by
``bench/operating_characteristics.py``, the tests and ``python -m cxrray.analysis plan``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from cxrray.verdicts.verdict import AUROC_EFFECT, R_SHORTCUT, Verdict, judge


@dataclass(frozen=True)
class Truth:
    """The known answer of a simulated test set."""

    auc_hidden: float
    auc_original: float
    patients: int
    images: int = 3  # at most this many images per patient (1..images, uniform)
    icc: float = 0.5
    prevalence: float = 0.4
    rho: float = 0.5
    sd_pos: float = 1.0  # the positives' score spread against the negatives' 1 (a model's usual unequal spreads)
    cluster: str = "both"  # which class's patients have several correlated images: "both", "pos" or "neg"
    mixed: float = 0.0  # the share of patients holding both labels (a positive image and negative ones)

    @property
    def retained(self) -> float:
        return (self.auc_hidden - 0.5) / (self.auc_original - 0.5) if self.auc_original != 0.5 else float("nan")


def _scores(auc: float, y: np.ndarray, b: np.ndarray, e: np.ndarray, icc: np.ndarray, sd_pos: float
            ) -> np.ndarray:
    noise = (np.sqrt(icc) * b + np.sqrt(1 - icc) * e) * np.where(y, sd_pos, 1.0)
    if auc >= 1.0:
        return np.asarray(stats.norm.cdf(noise) + y)  # every positive above every negative
    if auc <= 0.0:
        return np.asarray(stats.norm.cdf(noise) - y)
    return np.asarray(np.sqrt(1 + sd_pos**2) * stats.norm.ppf(auc) * y + noise)


def draw(rng: np.random.Generator, t: Truth) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, patient ids, hidden scores, original scores) of one test set drawn from ``t``."""
    n_pos = min(max(round(t.prevalence * t.patients), 1), t.patients - 1)
    label = np.zeros(t.patients, bool)
    label[:n_pos] = True
    sizes = rng.integers(1, t.images + 1, t.patients)
    single = ~label if t.cluster == "pos" else label if t.cluster == "neg" else np.zeros(t.patients, bool)
    mixed = np.zeros(t.patients, bool)
    if t.mixed > 0:  # a negative patient with a positive image too (its first)
        mixed = ~label & (rng.random(t.patients) < t.mixed)
    sizes = np.where(single, 1, np.where(mixed, np.maximum(sizes, 2), sizes))
    pid = np.repeat(np.arange(t.patients), sizes)
    first = np.r_[True, pid[1:] != pid[:-1]]
    y = label[pid] | (mixed[pid] & first)
    icc = np.where(single[pid], 0.0, t.icc)
    b1, b2 = rng.normal(size=(2, t.patients))
    e1, e2 = rng.normal(size=(2, len(pid)))
    r = np.sqrt(1 - t.rho**2)
    hidden = _scores(t.auc_hidden, y, b1[pid], e1, icc, t.sd_pos)
    original = _scores(t.auc_original, y, (t.rho * b1 + r * b2)[pid], t.rho * e1 + r * e2, icc, t.sd_pos)
    return y, pid, hidden, original


CLAIMS = (Verdict.SHORTCUT, Verdict.SIGNAL, Verdict.PARTIAL, Verdict.INVERTED)  # claims of a signal without the lungs


def verdict_oc(t: Truth, reps: int, seed: int = 0, m: int = 1) -> dict[str, float]:
    """Over ``reps`` test sets drawn from ``t``: the rate of each verdict, the false-claim rate (a signal claimed
    where there is none; no_shortcut where the hidden AUROC is outside the margin), the wrong-strength rate
    (shortcut for a true partial or partial for a true shortcut, by the reference the row used), and the coverage of the
    hidden AUROC's, the drop's and the retained fraction's intervals (the ones the verdict shows)."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    cover = {"auroc": 0, "drop": 0, "retained": 0}
    retained_n = strength = 0
    for _ in range(reps):
        y, g, h, o = draw(rng, t)
        f = judge(y, h, g, m=m, original=(y, o, g), seed=int(rng.integers(1 << 30)))
        counts[f.verdict] = counts.get(f.verdict, 0) + 1
        strength += f.verdict in (Verdict.SHORTCUT, Verdict.PARTIAL) and (f.verdict == Verdict.SHORTCUT) != (
            t.retained >= R_SHORTCUT if f.reference.startswith("retained") else t.auc_hidden >= AUROC_EFFECT)
        cover["auroc"] += f.ci_lo_corrected <= t.auc_hidden <= f.ci_hi_corrected
        cover["drop"] += f.drop_lo <= t.auc_original - t.auc_hidden <= f.drop_hi
        if f.retained == f.retained:
            retained_n += 1
            cover["retained"] += f.retained_lo <= t.retained <= f.retained_hi
    if t.auc_hidden == 0.5:
        false = sum(counts.get(c, 0) for c in CLAIMS)
    elif abs(t.auc_hidden - 0.5) >= AUROC_EFFECT - 0.5:
        false = counts.get(Verdict.NO_SHORTCUT, 0)
    else:
        false = 0
    return ({v: counts.get(v, 0) / reps for v in (Verdict.SHORTCUT, Verdict.SIGNAL, Verdict.PARTIAL, Verdict.INVERTED,
                                                  Verdict.NO_SHORTCUT, Verdict.INCONCLUSIVE, Verdict.TOO_FEW)}
            | {"false_claims": false / reps, "false_strength": strength / reps, "cover_auroc": cover["auroc"] / reps,
               "cover_drop": cover["drop"] / reps,
               "cover_retained": cover["retained"] / retained_n if retained_n else float("nan")})
