"""The closed-form answer to "how many test patients would decide it", carried by every ``inconclusive`` verdict.

``approx_patients``: the verdict's interval (``delong.score_interval`` with the observed design effect) at the
observed AUROC, grown until it would exclude chance or fit inside the equivalence margin with the estimate moving
by 0.84 of its standard error (about 80 % power). ``plan.patients_needed`` is the simulated answer; the tests
check that the two agree.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from cxrray.stats.delong import score_interval
from cxrray.verdicts.verdict import Rules, Verdict

MAX_PATIENTS = 1_000_000


def expected_verdict(auc_hidden: float, rules: Rules = Rules()) -> Verdict:
    """What a large test set would say of a hidden AUROC: inverted below the margin, no_shortcut inside it,
    shortcut (or partial) above it; at the margin itself nothing is decided at any size."""
    if auc_hidden <= 0.5 - rules.margin_auroc:
        return Verdict.INVERTED
    if abs(auc_hidden - 0.5) < rules.margin_auroc:
        return Verdict.NO_SHORTCUT
    return Verdict.SHORTCUT


def approx_patients(auc: float, deff: float, images: float, prevalence: float, level: float,
                    rules: Rules = Rules()) -> int | None:
    """Roughly how many test patients would decide a verdict at this hidden AUROC (see the module docstring);
    None when no number would (the AUROC sits at the margin of equivalence)."""
    target = expected_verdict(auc, rules)
    if abs(abs(auc - 0.5) - rules.margin_auroc) < 1e-3:
        return None
    z = stats.norm.ppf(0.5 + level / 2)

    def decided(n: float) -> bool:
        pos, neg = n * prevalence * images / deff, n * (1 - prevalence) * images / deff
        lo, hi = (float(x) for x in score_interval(auc, pos, neg, level))
        wiggle = 0.84 * (hi - lo) / (2 * z)
        if target == Verdict.NO_SHORTCUT:
            return bool(abs(auc - 0.5) + wiggle + (hi - lo) / 2 < rules.margin_auroc)
        return bool((lo - wiggle > 0.5) if auc > 0.5 else (hi + wiggle < 0.5))

    n = 10.0
    while not decided(n):
        n *= 1.25
        if n > MAX_PATIENTS:
            return None
    return int(np.ceil(n))
