"""DeLong comparisons between cells, multiple-comparison adjustment, and the shortcut rule.

``pairwise_tests``: every pair of trials within a family (default: same study,
task, seed and fold, as the 15 pairs of the six staged-pretraining paths):
DeLong's paired test when both trials scored the same test images, the
unpaired test otherwise; Bonferroni and Holm adjustment within the family.

``shortcut_findings``: the hide-and-seek verdict per lung-hiding trial (a representation whose
registry entry says it hides the lungs: ``lungs_removed``, ``lungs_boxed_out``), by the rule of
``cxrray.analysis.verdict``: the hidden AUROC and its Bonferroni-corrected CI (m = the lung-hiding
trials tested), the paired drop from ``original`` and the retained fraction
(AUROC - 0.5) / (AUROC_original - 0.5) with their CIs, an exact test where DeLong cannot be trusted,
and one of shortcut / no_shortcut / inverted / degenerate / inconclusive. A trial whose model did not
learn (``degenerate`` in results.parquet) is not tested, and a degenerate ``original`` is no reference.
Every AUROC is clustered by patient and every trial is scored on its task's positive class (the
``positive`` column of the AUROC table). Step ``delong``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from cxrray.delong import auroc_ci, auroc_cov, paired_test, unpaired_test
from cxrray.analysis.figures import plot_forest
from cxrray.analysis.steps import Artifacts, LoadedRun, Section, analysis_step
from cxrray.analysis.tables import positive_title
from cxrray.analysis.verdict import RULE, judge
from cxrray.data.tasks import TASKS
from cxrray.representations import display_order, lung_hiding

REFERENCE = "original"  # the whole image: what a lung-hiding representation is compared with


def bonferroni(p: Sequence[float]) -> np.ndarray:
    """p x m, capped at 1."""
    p = np.asarray(p, float)
    return np.minimum(p * len(p), 1.0)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: sorted p_(i) x (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = adj
    return out


def trial_scores(test: pl.DataFrame, trial: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, is-positive, positive-class score, patient) of one trial's test images, in row order."""
    part = test.filter(pl.col("trial_id") == trial["trial_id"]).sort("row")
    index = TASKS.get(trial["task"]).classes.index(trial["positive"])
    return (part["row"].to_numpy(), (part["target"] == index).to_numpy(), part[f"prob_{trial['positive']}"].to_numpy(),
            part["patient_id"].to_numpy())


def pairwise_tests(predictions: pl.DataFrame, aurocs: pl.DataFrame,
                   family: Sequence[str] = ("study", "task", "seed", "fold")) -> pl.DataFrame:
    """DeLong test for every pair of trials within each family, with Bonferroni and Holm adjustment."""
    test = predictions.filter(pl.col("split") == "test")
    family = [c for c in family if c in aurocs.columns]
    label = [c for c in ("representation", "backbone", "method", "pretraining", "design") if c in aurocs.columns]
    out = []
    for key, group in aurocs.drop_nans("auroc").group_by(family or [pl.lit(0)], maintain_order=True):
        rows = []
        for a, b in itertools.combinations(group.iter_rows(named=True), 2):
            ra, ya, sa, ga = trial_scores(test, a)
            rb, yb, sb, gb = trial_scores(test, b)
            paired = np.array_equal(ra, rb)
            t = paired_test(ya, sa, sb, groups=ga) if paired else unpaired_test(ya, sa, yb, sb, ga, gb)
            rows.append({"family": ", ".join(f"{c} {v}" for c, v in zip(family, key)) if family else "all",
                         "a": ".".join(str(a[c]) for c in label), "b": ".".join(str(b[c]) for c in label),
                         "auroc_a": a["auroc"], "auroc_b": b["auroc"], "test": "paired" if paired else "unpaired",
                         "stat": t.stat, "p": t.p})
        if rows:
            p = [r["p"] for r in rows]
            for r, pb, ph in zip(rows, bonferroni(p), holm(p)):
                r |= {"p_bonferroni": float(pb), "p_holm": float(ph), "n_tests": len(rows)}
            out.extend(rows)
    return pl.DataFrame(out, infer_schema_length=None) if out else pl.DataFrame()


def shortcut_findings(predictions: pl.DataFrame, aurocs: pl.DataFrame, alpha: float = 0.05) -> pl.DataFrame:
    """Per lung-hiding trial: AUROC with its corrected CI, the paired drop from ``original`` and the retained
    fraction with their CIs, and the verdict (``cxrray.analysis.verdict``); ``shortcut`` is verdict == shortcut."""
    if "representation" not in aurocs.columns:
        return pl.DataFrame()
    test = predictions.filter(pl.col("split") == "test")
    hidden = aurocs.filter(pl.col("representation").is_in(lung_hiding())).drop_nans("auroc")
    if "degenerate" not in aurocs.columns:
        aurocs = aurocs.with_columns(pl.lit("").alias("degenerate"))
        hidden = hidden.with_columns(pl.lit("").alias("degenerate"))
    m = max(hidden.filter(pl.col("degenerate") == "").height, 1)  # degenerate trials are not tested
    level = 1 - alpha / m
    match = [c for c in ("backbone", "method", "task", "pretraining", "design", "seed", "fold") if c in aurocs.columns]
    rows = []
    for h in hidden.iter_rows(named=True):
        rh, y, s, g = trial_scores(test, h)
        ci = auroc_ci(y, s, level=level, groups=g)
        orig = aurocs.filter((pl.col("representation") == REFERENCE)
                             & pl.all_horizontal([pl.col(c) == h[c] for c in match]))
        o = orig.row(0, named=True) if orig.height and not orig.row(0, named=True)["degenerate"] else None
        original, p_orig = None, None
        if o is not None:
            ro, yo, so, go = trial_scores(test, o)
            if np.array_equal(ro, rh):  # the same test images: paired covariance
                aucs, cov = auroc_cov(y, np.vstack([s, so]), g)
                original = (float(aucs[1]), float(cov[1, 1]), float(cov[0, 1]))
                p_orig = paired_test(y, s, so, groups=g).p
            else:  # other test images: independent estimates
                oc = auroc_ci(yo, so, groups=go)
                original = (oc.auc, oc.var, 0.0)
        v = judge(y, s, ci.auc, ci.var, level, degenerate=h["degenerate"], original=original)
        rows.append({c: h[c] for c in ("representation", *match)} | {
            "verdict": v.verdict, "auroc": ci.auc, "ci_lo_corrected": ci.lo, "ci_hi_corrected": ci.hi,
            "level": level, "test": v.test, "p_above_chance": v.p_above, "p_below_chance": v.p_below,
            "auroc_original": original[0] if original else None, "drop": v.diff, "drop_lo": v.diff_lo,
            "drop_hi": v.diff_hi, "retained": v.retained if original else None, "retained_lo": v.retained_lo,
            "retained_hi": v.retained_hi, "p_vs_original": p_orig, "shortcut": v.verdict == "shortcut",
            "degenerate": h["degenerate"]})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def shortcut_sentences(findings: pl.DataFrame) -> list[str]:
    """The findings in plain words, one sentence per lung-hiding trial, each naming its verdict."""
    out = []
    for r in findings.iter_rows(named=True):
        who = f"{r['backbone']} on {r['representation']}" + (f" (seed {r['seed']})" if "seed" in r else "")
        ci = f"AUROC {r['auroc']:.3f}, {100 * r['level']:.1f} % CI [{r['ci_lo_corrected']:.3f}, " \
             f"{r['ci_hi_corrected']:.3f}] ({r['test']} test)"
        kept = ""
        if r["retained"] is not None and r["retained"] == r["retained"]:
            kept = (f"; it keeps {100 * r['retained']:.0f} % [{100 * r['retained_lo']:.0f}, "
                    f"{100 * r['retained_hi']:.0f}] of the original signal above chance (original AUROC "
                    f"{r['auroc_original']:.3f}, drop {r['drop']:+.3f} [{r['drop_lo']:+.3f}, {r['drop_hi']:+.3f}])")
        verdict = {
            "degenerate": f"no verdict: DEGENERATE model ({r['degenerate']})",
            "shortcut": "SHORTCUT: the model separates the classes without the lungs, above chance after correction, "
                        "keeping most of the original signal",
            "no_shortcut": "NO SHORTCUT (no shortcut flagged): without the lungs the signal is lost",
            "inverted": "INVERTED: significantly below chance, the representation carries the signal reversed",
            "inconclusive": "INCONCLUSIVE (no shortcut flagged): the data can neither show nor rule out a shortcut",
        }[r["verdict"]]
        out.append(f"{who}: {ci}{kept}. {verdict}.")
    return out


def findings_of(artifacts: dict[str, Artifacts]) -> pl.DataFrame:
    """The shortcut findings an analysis made (step ``delong``), empty when it made none."""
    step = artifacts.get("delong")
    return step.tables.get("shortcut_findings", pl.DataFrame()) if step else pl.DataFrame()


def findings_view(findings: pl.DataFrame) -> pl.DataFrame:
    """The findings as a reader compares them: who, the verdict, the AUROC with its corrected CI, the retained
    fraction and the drop from ``original`` with theirs, and the test that decided."""
    def ci(v: float | None, lo: float, hi: float, scale: float = 1.0, digits: int = 3) -> str:
        if v is None or v != v:
            return "\u2014"
        return f"{v * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"

    who = [c for c in ("representation", "backbone", "seed", "fold") if c in findings.columns]
    rows = [{c: r[c] for c in who} | {
        "verdict": r["verdict"], "AUROC [corrected CI]": ci(r["auroc"], r["ci_lo_corrected"], r["ci_hi_corrected"]),
        "CI level %": round(100 * r["level"], 2),
        "retained % of original signal [CI]": ci(r["retained"], r["retained_lo"], r["retained_hi"], 100, 0),
        "drop from original [CI]": ci(r["drop"], r["drop_lo"], r["drop_hi"]),
        "p above chance": r["p_above_chance"], "test": r["test"]} for r in findings.iter_rows(named=True)]
    return pl.DataFrame(rows, infer_schema_length=None)


def mean_variance(aucs: Sequence[float], variances: Sequence[float]) -> float:
    """Variance of the mean of k fold AUROCs: the within-fold DeLong variances, plus the between-fold
    component (the folds' sample variance beyond what their own sampling noise explains, a
    DerSimonian-Laird-style moment estimate), each divided as a mean of k folds."""
    a, v = np.asarray(aucs, float), np.asarray(variances, float)
    k = len(a)
    within = float(v.sum()) / k**2
    if k < 2:
        return within
    between = max(float(a.var(ddof=1)) - float(v.mean()), 0.0)
    return within + between / k


def design_drops(predictions: pl.DataFrame, aurocs: pl.DataFrame, level: float = 0.95) -> pl.DataFrame:
    """Hasan et al.'s bias measure: AUROC of the single and multiple designs minus the independent one
    (per backbone, task and seed; the mean over folds), with the unpaired DeLong CI and p of the drop; the
    variance of a fold mean includes the between-fold spread (``mean_variance``)."""
    if "design" not in aurocs.columns or "independent" not in set(aurocs["design"]):
        return pl.DataFrame()
    test = predictions.filter(pl.col("split") == "test")
    z = stats.norm.ppf(0.5 + level / 2)
    keys = [c for c in ("backbone", "method", "task", "seed") if c in aurocs.columns]
    rows = []
    for key, group in aurocs.drop_nans("auroc").group_by(keys, maintain_order=True):
        stats_by = {}
        for design, part in group.group_by("design"):
            aucs, variances = [], []
            for trial in part.iter_rows(named=True):
                _, y, s, g = trial_scores(test, trial)
                a, v = auroc_cov(y, s[None, :], g)
                aucs.append(float(a[0]))
                variances.append(float(v[0, 0]))
            stats_by[design[0]] = (float(np.mean(aucs)), mean_variance(aucs, variances), len(aucs))
        if "independent" not in stats_by:
            continue
        ind, v_ind, _ = stats_by["independent"]
        for design in ("single", "multiple"):
            if design in stats_by:
                auc, v, k = stats_by[design]
                se = np.sqrt(v + v_ind)
                drop = auc - ind
                rows.append(dict(zip(keys, key)) | {
                    "design": design, "auroc": auc, "folds": k, "auroc_independent": ind, "drop": drop,
                    "drop_lo": drop - z * se, "drop_hi": drop + z * se,
                    "p": float(2 * stats.norm.sf(abs(drop) / se)) if se > 0 else float("nan")})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def pvalue_matrices(pairs: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Per family: (heading, the pairwise p-value matrix, raw above the diagonal and Holm-adjusted below). Cells
    are named by the parts of their label that vary within the family (``lungs_removed / resnet18``, not
    ``lungs_removed.resnet18.standard.none.random``), in protocol order; the diagonal is empty (None)."""
    out = []
    for (family,), g in pairs.group_by("family", maintain_order=True):
        full = sorted(set(g["a"]) | set(g["b"]))
        parts = [n.split(".") for n in full]
        varying = [k for k in range(len(parts[0])) if len({p[k] for p in parts}) > 1]
        short = {n: " / ".join(p[k] for k in varying) or n for n, p in zip(full, parts)}
        names = sorted(full, key=lambda n: (display_order(sorted({p[0] for p in parts})).index(n.split(".")[0]), n))
        idx = {n: i for i, n in enumerate(names)}
        m: list[list[float | None]] = [[None] * len(names) for _ in names]
        for r in g.iter_rows(named=True):
            i, j = sorted((idx[r["a"]], idx[r["b"]]))
            m[i][j], m[j][i] = r["p"], r["p_holm"]
        out.append((f"{family}: raw p above the diagonal, Holm-adjusted below ({g.height} tests)",
                    pl.DataFrame({"cell": [short[n] for n in names]} |
                                 {short[n]: [row[k] for row in m] for k, n in enumerate(names)},
                                 schema={"cell": pl.Utf8} | {short[n]: pl.Float64 for n in names})))
    return out


@analysis_step(order=30)
def delong(run: LoadedRun) -> Artifacts:
    """DeLong tests between every pair of trials of a family (Bonferroni, Holm) and the shortcut findings."""
    a = Artifacts()
    pairs = pairwise_tests(run.predictions, run.aurocs, run.options.family) if run.aurocs.height else pl.DataFrame()
    if not pairs.is_empty():
        a.tables["delong_pairs"] = pairs
        a.text += (f"\n\nDeLong tests: {pairs.height} pair(s) in {pairs['family'].n_unique()} famil(ies); "
                   f"{int((pairs['p'] < 0.05).sum())} with raw p < 0.05, {int((pairs['p_holm'] < 0.05).sum())} after "
                   f"Holm, {int((pairs['p_bonferroni'] < 0.05).sum())} after Bonferroni (analysis/delong_pairs.csv).")
    findings = shortcut_findings(run.predictions, run.aurocs) if run.aurocs.height else pl.DataFrame()
    if not findings.is_empty():
        a.tables["shortcut_findings"] = findings
        counts = findings.group_by("verdict").len().sort("verdict")
        a.text += (f"\n\nShortcut findings ({RULE}):\n" + "\n".join(f"- {s}" for s in shortcut_sentences(findings))
                   + "\nVerdicts: " + ", ".join(f"{r['verdict']} {r['len']}" for r in counts.iter_rows(named=True)))
    if run.aurocs.height and not run.aurocs.drop_nans("auroc").is_empty():
        hide_seek = run.rows == "representation"
        plot_forest(run.aurocs, findings, run.figure("auroc_forest"), run.rows,
                    "Hide and seek: can the model still tell without the lungs?" if hide_seek
                    else f"Test AUROC per {run.rows}", f"test AUROC ({positive_title(run.aurocs)}), 95 % DeLong CI")
        a.figures["auroc_forest"] = ("Test AUROC with its 95 % DeLong CI per trial (colour: backbone); lung-hiding "
                                     "trials add the Bonferroni-corrected CI their verdict is judged on (band, "
                                     "colour: verdict) and the verdict")
    view = findings_view(findings) if not findings.is_empty() else None
    a.sections = [Section("Shortcut findings (per lung-hiding trial)", verdict="verdict", note=RULE,
                          extra=(("every column: analysis/shortcut_findings.csv", view),) if view is not None else ()),
                  Section("DeLong p-values", extra=tuple(pvalue_matrices(pairs)) if pairs.height else (),
                          note="" if pairs.height else "fewer than two trials: nothing to compare")]
    return a
