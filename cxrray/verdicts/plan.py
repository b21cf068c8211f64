"""How many test patients would decide it: sample sizes for a confident ``shortcut`` or ``no_shortcut``.

``patients_needed`` simulates (``cxrray.verdicts.simulate``) test sets of growing size with the given true
AUROCs, images per patient, intra-patient correlation and prevalence, judges each with the verdict rule itself
(``verdict.judge``), and returns the smallest number of test patients at which the expected verdict (shortcut or
partial for a hidden AUROC above the margin, no_shortcut inside it, inverted below) is reached in ``power`` of
the test sets. ``python -m cxrray.analysis plan`` prints it with the table of verdict rates per size.

``patients.approx_patients`` is the quick closed-form estimate every ``inconclusive`` verdict of the report
carries; the tests check that it agrees with this simulation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cxrray.declared import check_ranges, option
from cxrray.verdicts.patients import expected_verdict
from cxrray.verdicts.simulate import Truth, draw
from cxrray.verdicts.verdict import Rules, Verdict, judge

EXPECTED = {Verdict.SHORTCUT: (Verdict.SHORTCUT, Verdict.SIGNAL, Verdict.PARTIAL),
            Verdict.NO_SHORTCUT: (Verdict.NO_SHORTCUT,), Verdict.INVERTED: (Verdict.INVERTED,)}
SHOWN = (Verdict.SHORTCUT, Verdict.SIGNAL, Verdict.PARTIAL, Verdict.NO_SHORTCUT, Verdict.INCONCLUSIVE,
         Verdict.INVERTED, Verdict.TOO_FEW)  # the columns of the plan's table of verdict rates


@dataclass(frozen=True)
class Plan:
    """The answer of ``patients_needed``: the size (None: not reached up to the largest size tried), the verdict
    aimed at, and the rates of every verdict per size tried."""

    patients: int | None
    target: Verdict
    rates: list[tuple[int, dict[str, float]]]


def _rates(truth: Truth, m: int, rules: Rules, reps: int, rng: np.random.Generator) -> dict[str, float]:
    counts: dict[str, int] = {}
    for _ in range(reps):
        y, g, h, o = draw(rng, truth)
        v = judge(y, h, g, m=m, rules=rules, original=(y, o, g), seed=int(rng.integers(1 << 30))).verdict
        counts[v] = counts.get(v, 0) + 1
    return {k: c / reps for k, c in counts.items()}


@dataclass(frozen=True)
class PlanQuestion:
    """What ``cxrray plan`` is asked (``python -m cxrray.analysis plan``): the true AUROCs and the test sets'
    shape; each field is its option."""

    auroc_hidden: float = option(dataclasses.MISSING, "true AUROC of the lung-hiding model", lo=0, hi=1)
    auroc_original: float = option(0.9, "true AUROC of the original model", lo=0, hi=1)
    images: int = option(2, "images per patient (1..images, uniform)", lo=1, hi=1000)
    icc: float = option(0.5, "intra-patient correlation of the scores", lo=0, hi=1, open_hi=True)
    prevalence: float = option(0.4, "share of positive patients", lo=0, hi=1, open_lo=True, open_hi=True)
    trials: int = option(2, "lung-hiding trials tested together (Bonferroni m)", lo=1, hi=100_000)
    power: float = option(0.8, "share of test sets that must reach the verdict", lo=0, hi=1, open_lo=True,
                          open_hi=True)
    reps: int = option(200, "simulated test sets per size (at least 20: fewer cannot estimate a share of 80 %)",
                       lo=20, hi=100_000)
    margin: float = option(0.1, "equivalence margin around AUROC 0.5", lo=0, hi=0.5, open_lo=True, open_hi=True)

    def __post_init__(self) -> None:
        check_ranges(self)

    def answer(self) -> Plan:
        return patients_needed(self.auroc_hidden, self.auroc_original, self.images, self.icc, self.prevalence,
                               self.trials, Rules(margin_auroc=self.margin), self.power, self.reps)


def patients_needed(auc_hidden: float, auc_original: float, images: int = 2, icc: float = 0.5,
                    prevalence: float = 0.4, m: int = 1, rules: Rules = Rules(), power: float = 0.8,
                    reps: int = 200, seed: int = 0, start: int = 10, largest: int = 20_000) -> Plan:
    """The smallest number of test patients (doubling from ``start``, then halving the last step twice) at which
    the expected verdict comes out in at least ``power`` of ``reps`` simulated test sets."""
    rng = np.random.default_rng(seed)
    target = expected_verdict(auc_hidden, rules, 1 - rules.alpha / max(m, 1))
    wanted = EXPECTED[target]
    rates: list[tuple[int, dict[str, float]]] = []

    def ok(n: int) -> bool:
        r = _rates(Truth(auc_hidden, auc_original, n, images, icc, prevalence), m, rules, reps, rng)
        rates.append((n, r))
        return sum(r.get(w, 0.0) for w in wanted) >= power

    n, last = start, None
    while n <= largest and not ok(n):
        last, n = n, n * 2
    if n > largest:
        return Plan(None, target, rates)
    lo, hi = (last or n // 2), n
    for _ in range(2):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return Plan(hi, target, sorted(rates))


def format_plan(plan: Plan, auc_hidden: float, auc_original: float) -> str:
    """The plan as a reader wants it: the answer in one line, then the verdict rates per size."""
    head = (f"about {plan.patients:,} test patients" if plan.patients else "more test patients than were tried")
    words = {Verdict.SHORTCUT: "a confident signal without the lungs (shortcut, signal or partial)",
             Verdict.NO_SHORTCUT: "a confident no_shortcut (equivalence)", Verdict.INVERTED: "a confident inverted"}
    lines = [f"{head} give {words[plan.target]} for hidden AUROC {auc_hidden:g} against original {auc_original:g}",
             "", "patients | " + " | ".join(SHOWN), "---"]
    for n, r in plan.rates:
        lines.append(f"{n:>8} | " + " | ".join(f"{r.get(v, 0.0):.2f}" for v in
                                               SHOWN))
    return "\n".join(lines)

