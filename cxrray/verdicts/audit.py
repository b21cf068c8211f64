"""The verdicts that apply to a model trained on whole images and audited on every representation (issue 40).

Per representation: its AUROC with the patient-clustered interval at the Bonferroni level over the lung-hiding
representations. For each lung-hiding one (``representations.lung_hiding``), the shortcut rule itself
(``verdict.judge``) with ``original`` as the paired reference: above chance there, the model *reads outside the
lungs*. For ``lungs_isolated``, the drop from ``original`` (paired by image, patients as the unit): a drop whose
interval lies above 0 says the model *needs what lies outside the lungs*. Every sentence says what the evidence
is not: an image with its lungs removed is out of the model's training distribution, so chance there does not
prove that the model reads the lungs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cxrray.stats.interval import auroc_interval, clustered_difference, patients_per_class
from cxrray.verdicts.verdict import Headline, Rules, Verdict, judge, verdict_line

OUT_OF_DISTRIBUTION = ("the model never saw images without lungs: chance here does not show that it reads the "
                       "lungs, only that it cannot work without them")


@dataclass(frozen=True)
class AuditRow:
    """One representation of the audited model's test set: its AUROC [interval] and what it says."""

    representation: str
    auroc: float
    ci_lo: float
    ci_hi: float
    level: float
    patients_pos: int
    patients_neg: int
    verdict: str  # a shortcut verdict word for a lung-hiding representation, else "" (or the drop's word)
    says: str

    def row(self) -> dict[str, object]:
        return asdict(self)


def audit_rows(y: np.ndarray, patients: np.ndarray, probs: dict[str, np.ndarray], hiding: tuple[str, ...],
               rules: Rules = Rules(), seed: int = 0) -> list[AuditRow]:
    """The audit's table from the positive probabilities per representation (``probs``; ``original`` among
    them) of the same test images, labels ``y`` and ``patients``."""
    y = np.asarray(y, bool)
    m = max(sum(r in probs for r in hiding), 1)
    level = 1 - rules.alpha / m
    original = probs.get("original")
    out = []
    for rep, p in probs.items():
        if y.all() or not y.any():
            pos, neg = patients_per_class(y, patients)
            out.append(AuditRow(rep, float("nan"), float("nan"), float("nan"), level, pos, neg, Verdict.TOO_FEW.word,
                                "the test set holds one class: no AUROC"))
            continue
        if rep in hiding:  # the verdict's own interval (widened to chance where the exact test does not reject)
            f = judge(y, p, patients, m=m, rules=rules, seed=seed,
                      original=(y, original, patients) if original is not None else None)
            says = (f"reads outside the lungs: {f.reason}" if f.verdict in (Verdict.SHORTCUT, Verdict.SIGNAL,
                                                                               Verdict.PARTIAL, Verdict.INVERTED)
                    else f"{f.reason}; {OUT_OF_DISTRIBUTION}")
            out.append(AuditRow(rep, f.auroc, f.ci_lo_corrected, f.ci_hi_corrected, level, f.patients_pos,
                                f.patients_neg, f.verdict.word, says))
            continue
        ci = auroc_interval(y, p, patients, level)
        verdict, says = "", ""
        if rep == "lungs_isolated" and original is not None:
            every = np.ones(len(y), bool)
            diff, lo, hi, _ = clustered_difference(np.r_[y, y], np.r_[original, p],
                                                       np.r_[patients, patients], np.r_[every, ~every],
                                                       np.r_[~every, every], level)
            verdict = "needs_outside" if lo > 0 else "works_on_lungs" if hi < rules.margin_auroc else "undecided"
            says = {"needs_outside": f"needs what lies outside the lungs: AUROC drops by {diff:.3f} [{lo:.3f}, "
                                     f"{hi:.3f}] with only the lungs shown",
                    "works_on_lungs": f"works on the lungs alone: the drop {diff:.3f} [{lo:.3f}, {hi:.3f}] is below "
                                      f"{rules.margin_auroc:g}",
                    "undecided": f"the drop with only the lungs shown, {diff:.3f} [{lo:.3f}, {hi:.3f}], neither "
                                 f"excludes 0 nor lies below {rules.margin_auroc:g}"}[verdict]
        out.append(AuditRow(rep, ci.auc, ci.lo, ci.hi, level, ci.patients_pos, ci.patients_neg, verdict, says))
    return out


def audit_headline(rows: list[AuditRow], hiding: tuple[str, ...]) -> Headline:
    """The audit's answer: NO VERDICT when the model does not tell the classes apart on whole images (its
    ``original`` interval not above chance: a model that did not learn this task supports no claim), else the
    study headline over the lung-hiding representations."""
    original = next((r for r in rows if r.representation == "original"), None)
    if original is not None and original.verdict == Verdict.TOO_FEW.word:
        return Headline("NO VERDICT", Verdict.TOO_FEW, f"NO VERDICT: {original.says} ({original.patients_pos} "
                        f"positive and {original.patients_neg} negative patients)")
    if original is None or not original.ci_lo > 0.5:
        shown = "no original row" if original is None else (
            f"AUROC {original.auroc:.3f} [{original.ci_lo:.3f}, {original.ci_hi:.3f}] on whole images")
        return Headline("NO VERDICT", Verdict.DEGENERATE, f"NO VERDICT: the model does not tell the classes apart "
                        f"on this test set ({shown}); there is no signal to look for outside the lungs")
    return verdict_line([r.verdict for r in rows if r.representation in hiding], unit="lung-hiding representations")
