"""Exact permutation tests over patients: the small-sample and zero-variance fallbacks of the AUROC tests.

Under the null hypothesis (the score says nothing about the label) patients are exchangeable, images are not:
the images of one patient share the patient's anatomy, scanner and label. So labels are permuted *between
patients*, every image of a patient moving together, and the statistic (the image-level AUROC, midranks for
ties) is recomputed for every permutation. The midranks of the pooled scores do not depend on the labels, so a
permutation's AUROC is the sum of its positive patients' rank sums: all C(P, k) choices of the k positive
patients are enumerated when there are at most ``ENUMERATE`` of them (exact, ties included), else ``DRAWS``
seeded random choices (Monte Carlo, p = (1 + hits) / (1 + draws), its standard error stated).

A patient whose images carry both labels is split into one unit per label (its images of one label still move
together). Decisions compare counts as fractions (``significant``): 1/20 is not below 0.05.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import stats

from cxrray.stats.ranks import placements

ENUMERATE = 20_000  # at most this many permutations are enumerated; more are sampled
DRAWS = 10_000  # Monte Carlo permutations when enumeration is too large (p +/- 0.002 near 0.05)
CHUNK = 2_000  # permutations evaluated at once (memory: CHUNK x units)
BUDGET = 2_000_000  # at most this many scores re-ranked at once by the paired test (chunks shrink with images)
LOOP_LIMIT = 4_096  # the unpaired test recomputes AUROCs per permutation in a loop: fewer, enumerated or drawn
TOL = 1e-9  # AUROCs closer than this count as equal (float sums of ranks)


@dataclass(frozen=True)
class ExactTest:
    """Permutation p-values: ``p_ge`` = P(statistic >= observed), ``p_le`` = P(<=), ``p_two`` = min(1, 2 min);
    ``hits_two`` / ``total`` is ``p_two`` as a fraction (enumerated) or (1 + hits) / (1 + draws) (sampled)."""

    statistic: float
    p_ge: float
    p_le: float
    p_two: float
    hits_two: int
    total: int
    enumerated: bool
    mc_se: float  # Monte Carlo standard error of p_two (0 when enumerated)

    @property
    def method(self) -> str:
        if self.enumerated:
            return f"exact permutation over patients ({self.total:,} permutations)"
        return f"Monte Carlo permutation over patients ({self.total - 1:,} draws, p +/- {self.mc_se:.1g})"

    def significant(self, alpha: float) -> bool:
        """p_two < alpha, compared as fractions (no float artefact at p = alpha)."""
        return Fraction(self.hits_two, self.total) < Fraction(f"{float(alpha):.12g}")  # 1 - 0.95 is 0.05


def units(y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """A unit id per image: its patient, or (patient, label) where a patient's images carry both labels."""
    y = np.asarray(y, bool)
    if groups is None:
        return np.arange(len(y))
    key = np.char.add(np.asarray(groups).astype(str), np.where(y, "\x00+", "\x00-"))
    _, patient = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    _, unit = np.unique(key, return_inverse=True)
    mixed = np.bincount(patient, weights=y, minlength=patient.max() + 1)
    sizes = np.bincount(patient, minlength=patient.max() + 1)
    whole = (mixed == 0) | (mixed == sizes)
    return np.where(whole[patient], patient, patient.max() + 1 + unit)


def _choices(n_units: int, k: int, rng: np.random.Generator, limit: int = ENUMERATE) -> Iterator[np.ndarray]:
    """Chunks of permutations as index arrays (rows: the k units chosen): all C(n_units, k) when at most
    ``limit``, else ``limit`` draws (``DRAWS`` for the default)."""
    total = math.comb(n_units, k)
    draws = DRAWS if limit == ENUMERATE else limit
    if total <= limit:
        it = itertools.combinations(range(n_units), k)
        while True:
            block = np.array(list(itertools.islice(it, CHUNK)), dtype=np.int64).reshape(-1, k)
            if not len(block):
                return
            yield block
    else:
        done = 0
        while done < draws:
            n = min(CHUNK, draws - done)
            yield np.argpartition(rng.random((n, n_units)), k, axis=1)[:, :k] if k < n_units else \
                np.tile(np.arange(n_units), (n, 1))
            done += n


def _result(observed: float, stat_chunks: Iterable[np.ndarray], total: int, enumerated: bool) -> ExactTest:
    ge = le = 0
    for s in stat_chunks:
        ge += int((s >= observed - TOL).sum())
        le += int((s <= observed + TOL).sum())
    if not enumerated:  # the observed labelling is one of the permutations
        ge, le, total = ge + 1, le + 1, total + 1
    hits = min(2 * min(ge, le), total)
    p_two = hits / total
    se = 0.0 if enumerated else float(np.sqrt(p_two * (1 - p_two) / total))
    return ExactTest(float(observed), ge / total, le / total, p_two, hits, total, enumerated, se)


def _unit_ranks(y: np.ndarray, score: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit: rank sum (k, U) of each score row, image count (U,), and whether it is positive (U,)."""
    ranks = np.vstack([stats.rankdata(r) for r in np.atleast_2d(score)])
    n_units = unit.max() + 1
    rank_sum = np.vstack([np.bincount(unit, weights=r, minlength=n_units) for r in ranks])
    size = np.bincount(unit, minlength=n_units).astype(float)
    positive = np.bincount(unit, weights=y.astype(float), minlength=n_units) > 0
    return rank_sum, size, positive


def _subsets(n_units: int, k: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``DRAWS`` uniform random k-subsets of n_units, in chunks: each drawn on its own (``Generator.choice``
    without replacement, which takes a set-based path when k is small), so memory is CHUNK x k and time linear
    in the units, never a CHUNK x n_units matrix of random keys per chunk."""
    done = 0
    while done < DRAWS:
        n = min(CHUNK, DRAWS - done)
        yield np.stack([rng.choice(n_units, size=k, replace=False, shuffle=False) for _ in range(n)]) if k else \
            np.zeros((n, 0), np.int64)
        done += n


def permutation_auroc(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None = None, seed: int = 0
                      ) -> ExactTest:
    """Permutation test of the AUROC against chance, labels permuted between patients (``groups``).

    ``score`` may hold several rows (models scored on the same images): the statistic is then their mean AUROC,
    the same permutation applied to every row (one test for replicates of a protocol cell). Sampled
    permutations draw the smaller class's units (9 positive patients against 60,000 negatives: 9 per draw).
    """
    y = np.asarray(y, bool)
    score = np.atleast_2d(np.asarray(score, float))
    unit = units(y, groups)
    rank_sum, size, positive = _unit_ranks(y, score, unit)
    n, k = len(y), int(positive.sum())
    total = math.comb(len(size), k)
    all_size, all_ranks = size.sum(), rank_sum.sum(-1, keepdims=True)

    def auc(chosen: np.ndarray, complement: bool = False) -> np.ndarray:
        m = size[chosen].sum(-1)
        r = rank_sum[:, chosen].sum(-1)
        if complement:  # the units chosen are the negatives: the positives are the rest
            m, r = all_size - m, all_ranks - r
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(((r - m * (m + 1) / 2) / (m * (n - m))).mean(0), float)

    observed = float(auc(np.flatnonzero(positive)[None, :])[0])
    rng = np.random.default_rng(seed)
    enumerated = total <= ENUMERATE
    if enumerated:
        return _result(observed, (auc(c) for c in _choices(len(size), k, rng)), total, True)
    small = min(k, len(size) - k)
    return _result(observed, (auc(c, complement=small < k) for c in _subsets(len(size), small, rng)), DRAWS,
                   False)


def permutation_paired(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, groups: np.ndarray | None = None,
                       seed: int = 0) -> ExactTest:
    """Permutation test of AUROC(s1) - AUROC(s2) on the same images: the two models' scores are swapped for all
    images of a patient at once (2^P relabellings, enumerated up to ``ENUMERATE``)."""
    y = np.asarray(y, bool)
    s1, s2 = np.asarray(s1, float), np.asarray(s2, float)
    unit = units(y, groups)
    n_units = unit.max() + 1
    rng = np.random.default_rng(seed)
    enumerated = 2**n_units <= ENUMERATE

    pos = int(y.sum())
    n_neg = len(y) - pos

    def auc(scores: np.ndarray) -> np.ndarray:  # (B, N) -> (B,), midranks per row
        r = stats.rankdata(scores, axis=1)[:, y].sum(1)
        return np.asarray((r - pos * (pos + 1) / 2) / (pos * n_neg), float)

    def diff(flip: np.ndarray) -> np.ndarray:  # flip: (B, U) bool
        f = flip[:, unit]
        return np.asarray(auc(np.where(f, s2, s1)) - auc(np.where(f, s1, s2)), float)

    observed = float(diff(np.zeros((1, n_units), bool))[0])

    step = max(1, min(CHUNK, BUDGET // len(y)))  # memory bounded whatever the number of images

    def chunks() -> Iterator[np.ndarray]:
        if enumerated:
            codes = np.arange(2**n_units)
            for i in range(0, len(codes), step):
                c = codes[i:i + step, None]
                yield diff(((c >> np.arange(n_units)) & 1).astype(bool))
        else:
            for i in range(0, DRAWS, step):
                yield diff(rng.random((min(step, DRAWS - i), n_units)) < 0.5)

    return _result(observed, chunks(), 2**n_units if enumerated else DRAWS, enumerated)


def permutation_unpaired(y1: np.ndarray, s1: np.ndarray, g1: np.ndarray | None, y2: np.ndarray, s2: np.ndarray,
                         g2: np.ndarray | None, seed: int = 0) -> ExactTest:
    """Permutation test of AUROC(sample 1) - AUROC(sample 2) on independent samples: whole patients (their
    images, labels and scores) are reassigned between the two samples."""

    y = np.concatenate([np.asarray(y1, bool), np.asarray(y2, bool)])
    s = np.concatenate([np.asarray(s1, float), np.asarray(s2, float)])
    g1 = np.asarray(g1).astype(str) if g1 is not None else np.array([f"i{i}" for i in range(len(y1))])
    g2 = np.asarray(g2).astype(str) if g2 is not None else np.array([f"j{i}" for i in range(len(y2))])
    _, unit = np.unique(np.concatenate([np.char.add("1:", g1), np.char.add("2:", g2)]), return_inverse=True)
    n_units = unit.max() + 1
    first = np.bincount(unit[:len(g1)], minlength=n_units) > 0
    k = int(first.sum())
    rng = np.random.default_rng(seed)
    total = math.comb(n_units, k)
    enumerated = total <= LOOP_LIMIT

    def diff(chosen: np.ndarray) -> np.ndarray:
        out = []
        for c in chosen:
            in1 = np.isin(unit, c)
            a, b = (y[in1], s[in1]), (y[~in1], s[~in1])
            if min(a[0].sum(), (~a[0]).sum(), b[0].sum(), (~b[0]).sum()) == 0:
                out.append(np.nan)
                continue
            out.append(placements(*a)[0][0] - placements(*b)[0][0])
        return np.asarray(out)

    observed = float(diff(np.flatnonzero(first)[None, :])[0])
    chosen = (_choices(n_units, k, rng, limit=LOOP_LIMIT))
    return _result(observed, (np.nan_to_num(diff(c), nan=observed) for c in chosen),
                   total if enumerated else LOOP_LIMIT, enumerated)
