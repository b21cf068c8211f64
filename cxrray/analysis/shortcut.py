"""The hide-and-seek verdicts: per lung-hiding trial, and one per protocol cell (step ``shortcut``).

Per trial (a representation whose registry entry hides the lungs): the rule of ``cxrray.verdicts.verdict`` on its
test scores against the matched ``original`` trial (same backbone, method, task, pretraining, design, seed and
fold), at the Bonferroni level over the lung-hiding trials tested (degenerate ones are not tested).

Per cell (the trials of one protocol cell over seeds or folds): the replicates are combined by random effects,
never pooled: the mean AUROC (hidden and original) with a variance that adds the between-replicate spread (moment
estimate) to the test-set sampling error of the mean (the clustered DeLong covariance of all replicates scored on
the same test images, or of independent folds). Each side's variance is at least the replicates' mean interval
variance, so a cell of perfect replicates still has width; with few patients the exact permutation test of the
mean AUROC (every replicate's labels permuted together) must agree. The cell's verdict is the rule on these, at
the Bonferroni level over cells, with the replicates' own verdicts listed beside it; the headline counts cells.
A one-seed run has one trial per cell, and its cell verdicts are its trial verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
from scipy import stats

from cxrray.analysis.aurocs import positive_title, trial_scores
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.config import CELL_AXES
from cxrray.data.trial_rows import ByTrial, Predictions, by_trial
from cxrray.plots.figures import SEEDS_SHOWN, plot_forest
from cxrray.plots.palette import protocol_sorted
from cxrray.report.page import Answer, Artifacts, Section, answer_of
from cxrray.representations import lung_hiding
from cxrray.scalars import num
from cxrray.stats.delong import auroc_cov
from cxrray.stats.exact import permutation_auroc
from cxrray.stats.interval import auroc_interval, patients_per_class
from cxrray.verdicts.patients import approx_patients, expected_verdict
from cxrray.verdicts.verdict import (
    SMALL_PATIENTS,
    Estimate,
    Finding,
    Headline,
    Rules,
    Verdict,
    decide,
    estimate,
    judge,
    verdict_line,
)

REFERENCE = "original"  # the whole image: what a lung-hiding representation is compared with
MATCH = ("backbone", "method", "task", "pretraining", "design", "seed", "fold")


def _original_of(aurocs: pl.DataFrame, trial: dict) -> dict | None:
    match = [c for c in MATCH if c in aurocs.columns]
    found = aurocs.filter((pl.col("representation") == REFERENCE)
                          & pl.all_horizontal([pl.col(c) == trial[c] for c in match]))
    return found.row(0, named=True) if found.height else None


def _with_originals(aurocs: pl.DataFrame, hidden: pl.DataFrame) -> list[str]:
    """The trials of ``hidden`` each followed by its matched original (``_original_of``), the order in which the
    verdicts read them."""
    match = [c for c in MATCH if c in aurocs.columns]
    if not match:
        return hidden["trial_id"].to_list()
    originals = (aurocs.filter(pl.col("representation") == REFERENCE).unique(match, keep="first", maintain_order=True)
                 .select(*match, pl.col("trial_id").alias("_original")))
    paired = hidden.select("trial_id", *match).join(originals, on=match, how="left", maintain_order="left")
    return [t for pair in paired.select("trial_id", "_original").iter_rows() for t in pair if t is not None]


def shortcut_findings(predictions: Predictions, aurocs: pl.DataFrame, rules: Rules = Rules()) -> pl.DataFrame:
    """Per lung-hiding trial: the verdict and every number it rests on (``verdict.Finding``)."""
    if "representation" not in aurocs.columns:
        return pl.DataFrame()
    hidden = aurocs.filter(pl.col("representation").is_in(lung_hiding()))
    m = max(hidden.filter(pl.col("degenerate") == "").height, 1)
    axes = [c for c in ("representation", *MATCH) if c in aurocs.columns]
    rows = []
    test = by_trial(predictions, _with_originals(aurocs, hidden))
    for h in hidden.iter_rows(named=True):
        o = _original_of(aurocs, h)
        _, y, s, g = trial_scores(test, h)
        original = trial_scores(test, o)[1:] if o is not None and not o["degenerate"] else None
        f = judge(y, s, g, m=m, rules=rules, original=original, degenerate=h["degenerate"],
                  degenerate_original=o["degenerate"] if o is not None else "")
        rows.append({c: h[c] for c in axes} | {"trial_id": h["trial_id"]} | f.row()
                    | to_decide(f, y, s, g, rules) | {"shortcut": f.verdict == Verdict.SHORTCUT,
                       "degenerate": h["degenerate"]})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def to_decide(f: Finding, y: np.ndarray, s: np.ndarray, g: np.ndarray, rules: Rules) -> dict[str, float | str]:
    """For an inconclusive verdict: roughly how many test patients would decide it (``plan.approx_patients``
    with this test set's design effect, images per patient and prevalence) and the verdict they would bring
    (``decided_as``: the one the rule can reach at this AUROC); NaN and "" otherwise or when none would."""
    if f.verdict != Verdict.INCONCLUSIVE:
        return {"patients_to_decide": float("nan"), "decided_as": ""}
    ci = auroc_interval(y, s, g)
    patients = f.patients_pos + f.patients_neg
    n = approx_patients(f.auroc, ci.deff, len(y) / max(patients, 1), f.patients_pos / max(patients, 1), f.level,
                        rules)
    target = expected_verdict(f.auroc, rules, f.level)
    said = "a signal (shortcut, signal or partial)" if target == Verdict.SHORTCUT else target.word
    return {"patients_to_decide": float(n) if n is not None else float("nan"), "decided_as": said if n else ""}


def _combine(thetas: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random-effects mean of k replicate vectors ``thetas`` (k, d) whose sampling covariance is ``sigma``
    (k*d, k*d; replicate-major): the mean and its covariance, between-replicate spread included."""
    k, d = thetas.shape
    blocks = sigma.reshape(k, d, k, d)
    within = blocks.sum(axis=(0, 2)) / k**2  # covariance of the mean of the sampling errors
    if k < 2:
        return thetas[0], within
    own = np.einsum("jajb->ab", blocks)  # sum of each replicate's own block
    spread = np.atleast_2d(np.cov(thetas.T, ddof=1))
    between = spread - (own - k * within) / (k - 1)
    w, v = np.linalg.eigh((between + between.T) / 2)
    between = (v * np.clip(w, 0, None)) @ v.T  # clipped to a covariance
    return thetas.mean(0), between / k + within


def cell_finding(test: pl.DataFrame | ByTrial, aurocs: pl.DataFrame, cell: pl.DataFrame, m: int,
                 rules: Rules) -> Finding:
    """The verdict of one cell's lung-hiding replicates (``cell``) against their matched originals."""
    alpha_m = rules.alpha / max(m, 1)
    level = 1 - alpha_m
    z = stats.norm.ppf(1 - alpha_m / 2)
    live = [r for r in cell.iter_rows(named=True) if not r["degenerate"]]
    if not live:
        first = cell.row(0, named=True)
        nan = float("nan")
        return decide(Estimate(nan, nan, nan, nan, 0, 0, "", nan), None, 0.0, level, rules,
                      degenerate=f"every replicate ({first['degenerate']})")
    pairs = [(h, _original_of(aurocs, h)) for h in live]
    with_original = all(o is not None and not o["degenerate"] for _, o in pairs)
    scored = [(trial_scores(test, h), trial_scores(test, o) if with_original and o is not None else None)
              for h, o in pairs]
    lacking = [hs for hs, _ in scored if not hs[1].any() or hs[1].all()]
    if lacking:  # a replicate's test split of one class: no AUROC (verdict too_few, its patients counted)
        _, y1, _, g1 = lacking[0]
        nan = float("nan")
        return decide(Estimate(nan, nan, nan, nan, *patients_per_class(y1, g1), "", nan), None, 0.0, level, rules)
    rows0 = scored[0][0][0]
    shared = all(np.array_equal(hs[0], rows0) and (os_ is None or np.array_equal(os_[0], rows0)) for hs, os_ in scored)
    per = [(estimate(hs[1], hs[2], hs[3], alpha_m)[0], estimate(os_[1], os_[2], os_[3], alpha_m)[0] if os_ else None)
           for hs, os_ in scored]
    d = 2 if with_original else 1
    k = len(scored)
    if shared:
        _, y, _, g = scored[0][0]
        rows = [r for hs, os_ in scored for r in ((hs[2], os_[2]) if os_ else (hs[2],))]
        aucs, sigma = auroc_cov(y, np.vstack(rows), g)
    else:  # other test images per replicate (folds): independent sampling errors
        aucs, sigma = np.zeros(k * d), np.zeros((k * d, k * d))
        for j, (hs, os_) in enumerate(scored):
            a, c = auroc_cov(hs[1], np.vstack([hs[2], os_[2]]) if os_ else hs[2], hs[3])
            aucs[j * d:(j + 1) * d], sigma[j * d:(j + 1) * d, j * d:(j + 1) * d] = a, c
    mean, cov = _combine(aucs.reshape(k, d), np.nan_to_num(sigma))
    sides = []
    for i in range(d):
        side = [e for p in per if (e := p[i]) is not None]  # (every replicate has both sides when d is 2)
        floor = float(np.mean([e.var for e in side]))
        var = max(float(cov[i, i]), floor)
        lo, hi = max(0.0, mean[i] - z * np.sqrt(var)), min(1.0, mean[i] + z * np.sqrt(var))
        pp = min(e.patients_pos for e in side)
        pn = min(e.patients_neg for e in side)
        test_name, p_two = "random-effects mean", float(2 * stats.norm.sf(abs(mean[i] - 0.5) / np.sqrt(var)))
        if shared and (min(pp, pn) < SMALL_PATIENTS or cov[i, i] <= 0):
            exact = permutation_auroc(y, np.vstack(rows[i::d]), g)  # side i of every replicate
            test_name, p_two = f"random-effects mean; {exact.method} of the mean AUROC", exact.p_two
            if not exact.significant(alpha_m):
                lo, hi = min(lo, 0.5), max(hi, 0.5)
        sides.append(Estimate(float(mean[i]), lo, hi, var, pp, pn, test_name, p_two))
    rho = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) if d == 2 and cov[0, 0] > 0 and cov[1, 1] > 0 else 0.0
    c01 = float(rho * np.sqrt(sides[0].var * sides[1].var)) if d == 2 else 0.0
    return decide(sides[0], sides[1] if d == 2 else None, c01, level, rules)


def cell_verdicts(predictions: Predictions, aurocs: pl.DataFrame, findings: pl.DataFrame,
                  rules: Rules = Rules()) -> pl.DataFrame:
    """One verdict per protocol cell of lung-hiding trials (``cell_finding``), its replicates' verdicts beside it."""
    if findings.is_empty():
        return pl.DataFrame()
    hidden = aurocs.filter(pl.col("representation").is_in(lung_hiding()))
    axes = [c for c in CELL_AXES if c in hidden.columns]
    cells = list(hidden.sort([c for c in ("seed", "fold", "trial_id") if c in hidden.columns])
                 .group_by(axes, maintain_order=True))
    several = [c for _, c in cells if c.height > 1]  # a one-replicate cell reads its finding, not predictions
    test = by_trial(predictions, _with_originals(aurocs, pl.concat(several) if several else hidden.clear()))
    m = max(sum(1 for _, c in cells if (c["degenerate"] == "").any()), 1)
    verdict_of = dict(zip(findings["trial_id"], findings["verdict"], strict=True))
    rows = []
    for key, cell in cells:
        if cell.height == 1:  # one replicate: the trial's verdict at the cell level (same m)
            f = findings.filter(pl.col("trial_id") == cell["trial_id"][0]).row(0, named=True)
            row = {c: f[c] for c in (*Finding.__dataclass_fields__, "patients_to_decide", "decided_as")}
        else:
            found = cell_finding(test, aurocs, cell, m, rules)
            _, y, s, g = trial_scores(test, cell.row(0, named=True))
            row = found.row() | to_decide(found, y, s, g, rules)
        reps = [c for c in ("seed", "fold") if c in cell.columns and cell[c].n_unique() > 1] or \
            [c for c in ("seed", "fold") if c in cell.columns][:1]
        listed = "; ".join(f"{' '.join(f'{c} {r[c]}' for c in reps)}: {verdict_of.get(r['trial_id'], '')}"
                           for r in cell.iter_rows(named=True))
        rows.append(dict(zip(axes, key, strict=True)) | {"replicates": cell.height} | row
                    | {"replicate_verdicts": listed})
    return pl.DataFrame(rows, infer_schema_length=None)


def _ci(v: float | None, lo: float, hi: float, scale: float = 1.0, digits: int = 3) -> str:
    if v is None or v != v:
        return "\u2014"
    return f"{v * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def shortcut_sentences(findings: pl.DataFrame) -> list[str]:
    """The findings in plain words, one sentence per trial or cell, each naming its verdict and why."""
    out = []
    for r in findings.iter_rows(named=True):
        who = f"{r.get('backbone', '')} on {r['representation']}"
        who += f" ({r['replicates']} replicates)" if r.get("replicates", 1) > 1 else \
            (f" (seed {r['seed']})" if "seed" in r else "")
        kept = ""
        if r["retained"] == r["retained"]:
            kept = (f"; retained fraction {_ci(r['retained'], r['retained_lo'], r['retained_hi'], 100, 0)} % of the "
                    f"original's signal (original AUROC {r['auroc_original']:.3f}, drop "
                    f"{_ci(r['drop'], r['drop_lo'], r['drop_hi'])})")
        more = ""
        if r.get("patients_to_decide") is not None and r["patients_to_decide"] == r["patients_to_decide"]:
            more = (f" Roughly {int(r['patients_to_decide']):,} test patients (now "
                    f"{r['patients_pos'] + r['patients_neg']}) would decide it ({r['decided_as']} if "
                    f"the AUROC stays at {r['auroc']:.3f}; python -m cxrray.analysis plan).")
        elif r["verdict"] == Verdict.INCONCLUSIVE:
            more = (" No number of test patients decides it at this AUROC: an interval that holds 0.5 no longer "
                    "fits inside the margin.")
        read = f"{100 * r['level']:.1f} % interval, {r['test']}; " if r["test"] else ""  # (none: no model learned)
        out.append(f"{who}: {r['verdict'].replace('_', ' ').upper()}: {r['reason']} ({read}reference: "
                   f"{r['reference']}){kept}.{more}")
    return out


def findings_view(findings: pl.DataFrame) -> pl.DataFrame:
    """The findings as a reader compares them: who, the verdict, the AUROC with its corrected interval, the
    retained fraction and the drop with theirs, the reference used and the test that decided."""
    who = [c for c in ("representation", "backbone", "seed", "fold", "replicates") if c in findings.columns]
    return pl.DataFrame([{c: r[c] for c in who} | {
        "verdict": r["verdict"], "AUROC [corrected interval]": _ci(r["auroc"], r["ci_lo_corrected"],
                                                                   r["ci_hi_corrected"]),
        "level %": round(100 * r["level"], 2), "patients +/-": f"{r['patients_pos']}/{r['patients_neg']}",
        "retained % [interval]": _ci(r["retained"], r["retained_lo"], r["retained_hi"], 100, 0),
        "drop from original [interval]": _ci(r["drop"], r["drop_lo"], r["drop_hi"]),
        "reference": r["reference"], "test": r["test"]} for r in findings.iter_rows(named=True)],
        infer_schema_length=None)


def _headline(cells: pl.DataFrame) -> Headline:
    """The study's answer in one line (``verdict.verdict_line``), counting protocol cells."""
    several = not cells.is_empty() and num(cells["replicates"].max()) > 1
    return verdict_line(cells["verdict"].to_list() if not cells.is_empty() else [],
                        "lung-hiding cells" if several else "lung-hiding trials")


def headline(artifacts: Mapping[str, Artifacts]) -> Headline:
    """The study's answer in one line, from its ``Answer`` (no verdict when the shortcut step made none)."""
    answer = answer_of(artifacts)
    return answer.headline if answer is not None else verdict_line([])


@analysis_step(order=31)
def shortcut(run: LoadedRun) -> Artifacts:
    """The shortcut verdict per lung-hiding trial and per protocol cell (replicates combined)."""
    a = Artifacts()
    rules = run.options.rules
    findings = shortcut_findings(run.predictions, run.aurocs, rules) if run.aurocs.height else pl.DataFrame()
    if not findings.is_empty():
        cells = cell_verdicts(run.predictions, run.aurocs, findings, rules)
        a.tables |= {"shortcut_findings": findings, "cell_verdicts": cells}
        several = num(cells["replicates"].max()) > 1
        counts = cells.group_by("verdict").len().sort("verdict")
        a.text += (f"\n\nShortcut verdicts ({rules.text()}):\n"
                   + "\n".join(f"- {s}" for s in shortcut_sentences(cells if several else findings))
                   + "\nVerdicts" + (" per cell" if several else "") + ": "
                   + ", ".join(f"{r['verdict']} {r['len']}" for r in counts.iter_rows(named=True)))
    if run.aurocs.height and not run.aurocs.drop_nans("auroc").is_empty():
        hide_seek = run.rows == "representation"
        left = plot_forest(run.aurocs, findings, run.figure("auroc_forest"), run.rows,
                           "Hide and seek: can the model still tell without the lungs?" if hide_seek
                           else f"Test AUROC per {run.rows}", f"test AUROC ({positive_title(run.aurocs)}), 95 % "
                           "interval")
        a.figures["auroc_forest"] = ("Test AUROC with its 95 % interval per trial (colour: backbone); lung-hiding "
                                     "trials add the Bonferroni-corrected interval their verdict reads (band, "
                                     "colour: verdict) and the verdict"
                                     + (f"; the first {SEEDS_SHOWN} seeds, {left} more in the tables" if left else ""))
    extra: tuple = ()
    if not findings.is_empty():
        extra = (("per trial (every column: analysis/shortcut_findings.csv)", findings_view(findings)),)
        if num(a.tables["cell_verdicts"]["replicates"].max()) > 1:
            extra = (("per protocol cell, replicates combined (analysis/cell_verdicts.csv)",
                      findings_view(a.tables["cell_verdicts"])), *extra)
    a.sections = [Section("Shortcut verdicts", verdict="verdict", note=rules.text(), extra=extra)]
    cells = protocol_sorted(a.tables.get("cell_verdicts", pl.DataFrame()))
    a.answer = Answer(_headline(cells), cells, tuple(shortcut_sentences(cells)) if cells.height else ())
    return a
