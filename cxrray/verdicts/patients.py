"""The closed-form answer to "how many test patients would decide it", carried by every ``inconclusive`` verdict.

``approx_patients``: the verdict's interval (``interval.score_interval`` with the observed design effect) at the
observed AUROC, grown until it would exclude chance or fit inside the equivalence margin with the estimate moving
by 0.84 of its standard error (about 80 % power), for the verdict the rule can reach there
(``expected_verdict``). ``plan.patients_needed`` is the simulated answer; the tests
check that the two agree.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from cxrray.stats.interval import score_interval
from cxrray.verdicts.verdict import Rules, Verdict

MAX_PATIENTS = 1_000_000


def expected_verdict(auc_hidden: float, rules: Rules = Rules(), level: float = 0.95) -> Verdict:
    """The verdict more test patients would bring at this hidden AUROC, in the rule's own order (an interval
    above or below chance is read before equivalence): ``no_shortcut`` only where an interval can hold 0.5 and
    fit inside 0.5 +/- the margin with about 80 % power, |AUROC - 0.5| < margin (z - 0.84) / 2z (0.029 at
    the default margin and 95 %); beyond it the interval leaves chance first: ``inverted`` below, a signal
    (``shortcut`` or ``partial``) above. A hidden AUROC of 0.55 used to be promised ``no_shortcut``; at the size
    promised the rule said ``partial`` in 91 % of test sets."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    if abs(auc_hidden - 0.5) < rules.margin_auroc * (z - 0.84) / (2 * z):
        return Verdict.NO_SHORTCUT
    return Verdict.INVERTED if auc_hidden < 0.5 else Verdict.SHORTCUT


def approx_patients(auc: float, deff: float, images: float, prevalence: float, level: float,
                    rules: Rules = Rules()) -> int | None:
    """Roughly how many test patients would decide ``expected_verdict`` at this hidden AUROC (see the module
    docstring); None when no number would (``no_shortcut`` whose window of sizes is empty in this arithmetic)."""
    target = expected_verdict(auc, rules, level)
    z = stats.norm.ppf(0.5 + level / 2)
    gap = abs(auc - 0.5)

    def interval(n: float) -> tuple[float, float, float]:
        pos, neg = n * prevalence * images / deff, n * (1 - prevalence) * images / deff
        lo, hi = (float(x) for x in score_interval(auc, pos, neg, level))
        return lo, hi, 0.84 * (hi - lo) / (2 * z)

    def decided(n: float) -> bool:
        lo, hi, wiggle = interval(n)
        if target == Verdict.NO_SHORTCUT:
            return bool(gap + wiggle + (hi - lo) / 2 < rules.margin_auroc)
        return bool((lo - wiggle > 0.5) if auc > 0.5 else (hi + wiggle < 0.5))

    n = 10.0
    while not decided(n):
        n *= 1.25
        if n > MAX_PATIENTS:
            return None
    if target == Verdict.NO_SHORTCUT:  # the interval must still hold 0.5, or the rule reads a signal first
        lo, hi, wiggle = interval(n)
        if (hi - lo) / 2 - wiggle <= gap:
            return None
    return int(np.ceil(n))
