"""The shortcut verdict for one lung-hiding trial (or protocol cell): a claim with an effect size, right at the edges.

Inputs: the hidden representation's test scores, the matched ``original`` trial's (paired when they scored the
same images), the patients, and whether either model is degenerate. Every interval is a two-sided interval at
the Bonferroni-corrected level ``1 - alpha / m`` (m: the lung-hiding trials or cells tested together), and every
decision reads that one interval: *one decision, one interval*. The rule, in order:

1. ``degenerate``: the model did not learn (constant, NaN or infinite scores; one class at chance loss).
2. ``too_few``: fewer than ``MIN_PATIENTS`` test patients in a class: nothing can be concluded.
3. The hidden AUROC's interval: the score interval with the patients' design effect (``interval.auroc_interval``).
   With fewer than ``SMALL_PATIENTS`` patients in a class, or no spread, the exact permutation test over patients
   (``cxrray.stats.exact``) must agree: where it does not reject at alpha / m, the interval is widened to reach 0.5.
4. ``inverted``: the interval lies below 0.5: the signal exists without the lungs, reversed.
5. Above chance (the interval lies above 0.5): the effect is measured against a *usable* original (its own
   interval above 0.5, its AUROC at least ``AUROC_EFFECT``, and a bounded Fieller interval for the ratio), read
   off an interval like every other decision: ``shortcut`` when the retained fraction ``R = (A_h - 0.5) /
   (A_o - 0.5)``'s interval lies at or above ``R_SHORTCUT``, ``partial`` when it lies below, and ``signal``
   (the classes are told apart without the lungs; strength undetermined) when it straddles the line. Without a
   usable original the absolute rule reads the AUROC's interval against ``AUROC_EFFECT`` the same way. The row
   says which reference was used. (A true partial, R = 0.4 at 64 patients, was called ``shortcut`` from the
   point estimate in 22 % of test sets.)
6. ``no_shortcut`` is an equivalence claim (two one-sided tests, read off the same interval): the hidden AUROC's
   interval inside ``0.5 +/- margin_auroc`` and, with a usable original, the retained fraction's (Fieller)
   interval inside ``+/- margin_retained``. A reversed or wide estimate never reads as "no shortcut".
7. ``inconclusive``: anything else; the report says roughly how many test patients would decide it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
from scipy import stats

from cxrray.declared import check_ranges, option
from cxrray.stats.delong import auroc_cov
from cxrray.stats.exact import permutation_auroc, permutation_paired
from cxrray.stats.interval import AurocInterval, auroc_interval, patients_per_class

ALPHA = 0.05
VERDICT = "the verdict's rule"  # their --help section
MIN_PATIENTS = 5  # fewer test patients in a class: no verdict (2 + 2 patients cannot reach p < 0.05 at all)
SMALL_PATIENTS = 10  # fewer in a class, or no spread: the exact permutation test over patients must agree
R_SHORTCUT = 0.5  # a shortcut keeps at least half of the original's signal above chance without the lungs
AUROC_EFFECT = 0.6  # the smallest AUROC called an effect (absolute rule, and a usable original's minimum)


class Verdict(StrEnum):
    """The verdict vocabulary: its words, colours, mark and order live here and nowhere else."""

    SHORTCUT = ("shortcut", "#c62828", "#f9dcdc", "\u25cf", "SHORTCUT: the classes are told apart without the lungs")
    INVERTED = ("inverted", "#6a1b9a", "#eadcf2", "\u25bc",
                "INVERTED: significantly below chance without the lungs (the signal exists, reversed)")
    SIGNAL = ("signal", "#d84315", "#fbe0d6", "\u25d1",
              "SIGNAL: the classes are told apart without the lungs; shortcut or partial is undetermined")
    PARTIAL = ("partial", "#e65100", "#fde3cf", "\u25d0",
               "PARTIAL: a signal without the lungs, weaker than half of the original's")
    INCONCLUSIVE = ("inconclusive", "#b7791f", "#fbefd2", "?",
                    "INCONCLUSIVE: the data neither show nor rule out a shortcut")
    NO_SHORTCUT = ("no_shortcut", "#2e7d32", "#dcefdc", "\u25cb",
                   "NO SHORTCUT: a useful signal without the lungs is ruled out (equivalence)")
    TOO_FEW = ("too_few", "#757575", "#e6e6e6", "\u2205", "TOO FEW PATIENTS: no verdict possible")
    DEGENERATE = ("degenerate", "#757575", "#e6e6e6", "\u2715", "DEGENERATE: the model did not learn; no claim")

    colour: str
    background: str
    mark: str
    meaning: str

    def __new__(cls, word: str, colour: str, background: str, mark: str, meaning: str) -> Verdict:
        member = str.__new__(cls, word)  # a str: equal to its word in tables, CSVs and comparisons
        member._value_ = word
        member.colour, member.background, member.mark, member.meaning = colour, background, mark, meaning
        return member

    @property
    def word(self) -> str:
        return str(self.value)

    @classmethod
    def of(cls, word: str) -> Verdict:
        return cls._value2member_map_[word]  # type: ignore[return-value]


VERDICTS = tuple(v.word for v in Verdict)


class StepWord(StrEnum):
    """Base of an analysis step's own verdict vocabulary (calibration, subgroups, ShorT ...): each member is its
    word in the tables (a str) and the ``Verdict`` whose colour it takes (a problem found red, none found green,
    no claim grey). The report colours by ``tone_of`` and steps filter by member, never by matching a sentence,
    so rewording a verdict changes one line."""

    tone: Verdict

    def __new__(cls, word: str, tone: Verdict) -> StepWord:
        member = str.__new__(cls, word)
        member._value_ = word
        member.tone = tone
        return member

    @property
    def word(self) -> str:
        return str(self.value)


def tone_of(word: str) -> Verdict | None:
    """The colour-bearing verdict of any verdict word of the run: a shortcut ``Verdict`` itself, or the tone of a
    step's ``StepWord`` member (every step module defines its vocabulary before the report reads it)."""
    for v in Verdict:
        if v.word == word:
            return v
    for vocabulary in StepWord.__subclasses__():
        for member in vocabulary:
            if member.word == word:
                return member.tone
    return None


@dataclass(frozen=True)
class Rules:
    """The verdict's thresholds (options of the analysis, printed in the report)."""

    alpha: float = option(ALPHA, "family-wise error of the shortcut verdicts (Bonferroni over the lung-hiding "
                          "trials or cells)", lo=0, hi=1, open_lo=True, open_hi=True, group=VERDICT)
    margin_auroc: float = option(AUROC_EFFECT - 0.5, "no_shortcut needs the hidden AUROC's interval inside 0.5 "
                                 "+/- this margin", flag="--equivalence-auroc", lo=0, hi=0.5, open_lo=True,
                                 open_hi=True, group=VERDICT)
    margin_retained: float = option(R_SHORTCUT, "... and, with a usable original, the retained fraction's "
                                    "interval inside +/- this margin", flag="--equivalence-retained", lo=0,
                                    open_lo=True, group=VERDICT)

    def __post_init__(self) -> None:
        """Thresholds a verdict can be read against, or one line naming the option (a margin of -1 called AUROC
        0.7 'inverted' with confidence)."""
        check_ranges(self)

    def text(self) -> str:
        return (f"verdict per lung-hiding trial (or cell of replicates) from one two-sided interval at the "
                f"Bonferroni-corrected level 1 - {self.alpha:g}/m: degenerate (the model did not learn) > too_few "
                f"(< {MIN_PATIENTS} test patients in a class) > inverted (interval below 0.5) > shortcut (interval "
                f"above 0.5 and the retained fraction (AUROC_hidden - 0.5) / (AUROC_original - 0.5)'s interval >= "
                f"{R_SHORTCUT}, or the AUROC's >= {AUROC_EFFECT} without a usable original) > partial (that interval "
                f"below the line) > signal (it straddles the line: strength undetermined) > no_shortcut "
                f"(equivalence: the interval inside 0.5 +/- {self.margin_auroc:g} and, with a usable original, the "
                f"retained fraction's inside +/- {self.margin_retained:g}) > inconclusive; with < {SMALL_PATIENTS} "
                f"patients in a class or no spread an exact permutation test over patients must agree")


@dataclass(frozen=True)
class Estimate:
    """One side of the comparison as the rule reads it: the AUROC, its interval at the corrected level
    (already widened where the exact test does not reject), a variance never below what that interval implies,
    the patients per class, the test that decided it and its two-sided p."""

    auc: float
    lo: float
    hi: float
    var: float
    patients_pos: int
    patients_neg: int
    test: str
    p_two: float

    @property
    def above(self) -> bool:
        return self.lo > 0.5

    @property
    def below(self) -> bool:
        return self.hi < 0.5


def estimate(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None, alpha_m: float, seed: int = 0
             ) -> tuple[Estimate, AurocInterval]:
    """The AUROC against chance at the corrected level ``1 - alpha_m``: the score interval, and where the
    sample is small or has no spread the exact permutation test over patients, which must agree."""
    ci = auroc_interval(y, score, groups, level=1 - alpha_m)
    lo, hi = ci.lo, ci.hi
    z = stats.norm.ppf(1 - alpha_m / 2)
    test, p = "score interval", ci.p_chance  # the test the interval inverts: p < alpha_m iff it excludes 0.5
    if min(ci.patients_pos, ci.patients_neg) < SMALL_PATIENTS or not (np.isfinite(ci.var) and ci.var > 0):
        exact = permutation_auroc(y, score, groups, seed=seed)
        test, p = f"{exact.method} and the score interval", max(exact.p_two, p)  # both must reject
        if not exact.significant(alpha_m):
            lo, hi = min(lo, 0.5), max(hi, 0.5)  # the exact test does not reject: the interval reaches chance
    var = max(ci.var if np.isfinite(ci.var) else 0.0, ((hi - lo) / (2 * z)) ** 2)  # never below the interval
    return Estimate(ci.auc, lo, hi, var, ci.patients_pos, ci.patients_neg, test, p), ci


def fieller(a: float, b: float, va: float, vb: float, cab: float, z: float) -> tuple[float, float] | None:
    """Fieller's interval for the ratio a / b of two correlated estimates; None when it is unbounded (b is
    not distinguishable from 0 at this level)."""
    qa, qb, qc = b * b - z * z * vb, -2 * (a * b - z * z * cab), a * a - z * z * va
    if qa <= 0:
        return None
    disc = qb * qb - 4 * qa * qc
    if disc < 0:
        return None
    root = np.sqrt(disc)
    return float((-qb - root) / (2 * qa)), float((-qb + root) / (2 * qa))


@dataclass(frozen=True)
class Finding:
    """The verdict of one lung-hiding trial or cell, with every number it rests on."""

    verdict: Verdict  # a str too: tables and comparisons read its word
    reason: str
    reference: str  # "retained fraction vs original" or "absolute (...why the original is not usable)"
    test: str
    auroc: float
    ci_lo_corrected: float
    ci_hi_corrected: float
    level: float
    p_chance: float  # two-sided p against chance: the score test the interval inverts (and the exact test's)
    p_chance_corrected: float  # ... times m (Bonferroni): below alpha exactly where the interval excludes chance
    patients_pos: int
    patients_neg: int
    auroc_original: float
    original_lo: float
    original_hi: float
    drop: float  # A_o - A_h
    drop_lo: float
    drop_hi: float
    p_vs_original: float
    retained: float
    retained_lo: float
    retained_hi: float

    def row(self) -> dict[str, object]:
        return asdict(self)


NAN = float("nan")


def _usable(original: Estimate | None, degenerate_original: str, ratio: tuple[float, float] | None) -> str:
    """'' when the original can be the reference, else why not."""
    if degenerate_original:  # (said first: a degenerate original is passed as no estimate)
        return f"the original model is degenerate ({degenerate_original})"
    if original is None:
        return "no original trial to compare with"
    if min(original.patients_pos, original.patients_neg) < MIN_PATIENTS:
        return "too few patients in the original's test set"
    if not original.above:
        return f"the original is not above chance (AUROC {original.auc:.3f} [{original.lo:.3f}, {original.hi:.3f}])"
    if original.auc < AUROC_EFFECT:
        return f"the original's AUROC {original.auc:.3f} is below the effect size {AUROC_EFFECT}"
    if ratio is None:
        return "the retained fraction's interval is unbounded"
    return ""


def _strength(hidden: Estimate, usable: bool, retained: float, r_lo: float, r_hi: float) -> tuple[Verdict, str]:
    """Shortcut, partial or signal of an estimate above chance, read off the retained fraction's interval (with a
    usable original) or the AUROC's (without), never off the point estimate alone."""
    if usable:
        shown = (f"the share of the original's signal it keeps, {100 * retained:.0f} % [{100 * r_lo:.0f}, "
                 f"{100 * r_hi:.0f}],")
        lo, hi, line = r_lo, r_hi, f"{100 * R_SHORTCUT:.0f} %"
    else:
        shown = "its AUROC interval"
        lo, hi, line = hidden.lo, hidden.hi, f"the effect size {AUROC_EFFECT}"
    if lo >= (R_SHORTCUT if usable else AUROC_EFFECT):
        return Verdict.SHORTCUT, f"{shown} lies at or above {line}"
    if hi < (R_SHORTCUT if usable else AUROC_EFFECT):
        return Verdict.PARTIAL, f"{shown} lies below {line}"
    return Verdict.SIGNAL, f"{shown} straddles {line}: its strength (shortcut or partial) is undetermined"


def decide(hidden: Estimate, original: Estimate | None, cov: float, level: float, rules: Rules, *,
           degenerate: str = "", degenerate_original: str = "", p_vs_original: float = NAN) -> Finding:
    """The rule of this module's docstring on estimates at the corrected ``level`` (``cov``: the covariance of
    the hidden and original AUROCs, 0 for other test images)."""
    z = stats.norm.ppf(0.5 + level / 2)
    drop = drop_lo = drop_hi = retained = r_lo = r_hi = NAN
    ratio = None
    if original is not None:
        drop = original.auc - hidden.auc
        half = z * np.sqrt(max(original.var + hidden.var - 2 * cov, 0.0))
        drop_lo, drop_hi = drop - half, drop + half
        if original.auc > 0.5:
            ratio = fieller(hidden.auc - 0.5, original.auc - 0.5, hidden.var, original.var, cov, z)
            retained = (hidden.auc - 0.5) / (original.auc - 0.5)
    why_not = _usable(original, degenerate_original, ratio)
    usable = not why_not
    if usable and ratio is not None:
        r_lo, r_hi = ratio
    else:
        retained = NAN
    reference = "retained fraction vs original" if usable else f"absolute ({why_not})"
    few = min(hidden.patients_pos, hidden.patients_neg) < MIN_PATIENTS
    shown = f"AUROC {hidden.auc:.3f} [{hidden.lo:.3f}, {hidden.hi:.3f}]"
    if degenerate:
        verdict, reason = Verdict.DEGENERATE, f"the model did not learn ({degenerate})"
    elif few:
        verdict, reason = Verdict.TOO_FEW, (f"{hidden.patients_pos} positive and {hidden.patients_neg} negative test "
                                            f"patients: fewer than {MIN_PATIENTS} in a class decide nothing")
    elif hidden.below:
        verdict, reason = Verdict.INVERTED, f"{shown} lies below chance: the signal exists without the lungs, reversed"
    elif hidden.above:
        verdict, size = _strength(hidden, usable, retained, r_lo, r_hi)
        reason = f"{shown} lies above chance and {size}"
    elif (hidden.lo > 0.5 - rules.margin_auroc and hidden.hi < 0.5 + rules.margin_auroc
          and (not usable or (r_lo > -rules.margin_retained and r_hi < rules.margin_retained))):
        verdict = Verdict.NO_SHORTCUT
        reason = (f"{shown} lies inside chance +/- {rules.margin_auroc:g}"
                  + (f" and the retained fraction's [{r_lo:.2f}, {r_hi:.2f}] inside +/- {rules.margin_retained:g}"
                     if usable else "") + ": a useful signal without the lungs is ruled out")
    else:
        verdict = Verdict.INCONCLUSIVE
        reason = (f"{shown} neither excludes chance nor lies inside chance +/- {rules.margin_auroc:g}"
                  + (f" (retained fraction [{r_lo:.2f}, {r_hi:.2f}])" if usable else ""))
    m = rules.alpha / (1 - level) if level < 1 else 1.0
    return Finding(verdict, reason, reference, hidden.test, hidden.auc, hidden.lo, hidden.hi, level,
                   hidden.p_two, min(1.0, hidden.p_two * m), hidden.patients_pos, hidden.patients_neg,
                   original.auc if original else NAN, original.lo if original else NAN,
                   original.hi if original else NAN, drop, drop_lo, drop_hi, p_vs_original, retained, r_lo, r_hi)


def judge(y: np.ndarray, hidden: np.ndarray, groups: np.ndarray | None, *, m: int = 1, rules: Rules = Rules(),
          original: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None, degenerate: str = "",
          degenerate_original: str = "", seed: int = 0) -> Finding:
    """The verdict of one lung-hiding trial from its test scores. ``original``: (labels, scores, patients) of the
    matched ``original`` trial; paired (covariance, exact swap test) when its labels are the same arrays' length
    and order as ``y`` (the same test images), else independent."""
    alpha_m = rules.alpha / max(m, 1)
    level = 1 - alpha_m
    y = np.asarray(y, bool)
    scores = np.asarray(hidden, float)
    if not degenerate and not np.isfinite(scores).all():  # (the pipeline flags these first; judge says it too)
        degenerate = f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are not finite"
    if degenerate or not y.any() or y.all():  # no model, or a test split of one class: no AUROC to estimate
        h = Estimate(NAN, NAN, NAN, NAN, *patients_per_class(y, groups), "", NAN)
        return decide(h, None, 0.0, level, rules, degenerate=degenerate)
    h, _ = estimate(y, hidden, groups, alpha_m, seed)
    o, cov, p_vs = None, 0.0, NAN
    one_class = original is not None and len(set(np.asarray(original[0], bool).tolist())) < 2
    if original is not None and not degenerate_original and not one_class:
        yo, so, go = original
        o, _ = estimate(yo, so, go, alpha_m, seed)
        if len(yo) == len(y) and np.array_equal(np.asarray(yo, bool), y):
            _, c = auroc_cov(y, np.vstack([hidden, so]), groups)
            var_d = c[0, 0] + c[1, 1] - 2 * c[0, 1]
            rho = c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]) if c[0, 0] > 0 and c[1, 1] > 0 else 0.0
            cov = float(rho * np.sqrt(h.var * o.var))
            if np.isfinite(var_d) and var_d > 1e-15:
                p_vs = float(2 * stats.norm.sf(abs(h.auc - o.auc) / np.sqrt(var_d)))
            else:  # no spread in the difference: exact over patients
                p_vs = permutation_paired(y, hidden, so, groups, seed=seed).p_two
    elif original is not None:
        o = Estimate(NAN, NAN, NAN, NAN, 0, 0, "", NAN)
    return decide(h, o, cov, level, rules, degenerate_original=degenerate_original, p_vs_original=p_vs)



@dataclass(frozen=True)
class Headline:
    """The study's answer: its head (``SHORTCUT``, ...), the verdict whose colour it takes, and the line."""

    head: str
    tone: Verdict
    text: str

    def __str__(self) -> str:
        return self.text


HEADS = (("SHORTCUT", ("shortcut",), Verdict.SHORTCUT),
         ("SIGNAL WITHOUT THE LUNGS", ("inverted", "signal", "partial"), Verdict.PARTIAL))


def verdict_line(verdicts: list[str], unit: str = "lung-hiding trials") -> Headline:
    """The study's answer in one line, naming every kind of evidence: SHORTCUT when any trial (cell) keeps the
    signal, SIGNAL WITHOUT THE LUNGS when one keeps a weaker (partial), reversed (inverted) or one of undetermined
    strength (signal), NO SHORTCUT
    when every one rules a useful signal out, NO VERDICT when none is usable, else INCONCLUSIVE (also when the
    usable ones rule it out but others did not learn or had too few patients: the study did not answer for
    them)."""
    if not verdicts:
        return Headline("NO VERDICT", Verdict.DEGENERATE, f"NO VERDICT: no {unit} in this run")
    n = {v: verdicts.count(v) for v in VERDICTS}
    usable = len(verdicts) - n["degenerate"] - n["too_few"]
    head, tone = next(((h, t) for h, kinds, t in HEADS if any(n[k] for k in kinds)), (None, None))
    if head is None or tone is None:
        head, tone = (("NO VERDICT", Verdict.DEGENERATE) if usable == 0 else
                      ("NO SHORTCUT", Verdict.NO_SHORTCUT) if n["no_shortcut"] == len(verdicts) else
                      ("INCONCLUSIVE", Verdict.INCONCLUSIVE))
    said = {"inverted": "inverted: the signal exists without the lungs, reversed",
            "partial": "partial: a weaker signal without the lungs",
            "signal": "signal: its strength undetermined"}
    rest = ", ".join(f"{n[v]} {said.get(v, v)}" for v in VERDICTS[1:] if n[v])
    return Headline(head, tone, f"{head}: {n['shortcut']}/{len(verdicts)} {unit} keep the signal without the lungs"
                    + (f" ({rest})" if rest else ""))
