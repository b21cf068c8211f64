"""DeLong comparisons between cells and multiple-comparison adjustment.

``pairwise_tests``: every pair of trials within a family (default: same study,
task, seed and fold, as the 15 pairs of the six staged-pretraining paths):
DeLong's paired test when both trials scored the same test images, the
unpaired test otherwise; Bonferroni and Holm adjustment within the family.

``design_drops``: the dataset-design bias of Hasan et al. The shortcut verdicts live in
``cxrray.analysis.shortcut``. Every AUROC is clustered by patient and every trial is scored on its task's
positive class. Step ``delong``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
from scipy import stats

from cxrray.analysis.aurocs import trial_scores
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.trial_rows import Predictions, by_trial
from cxrray.report.page import Artifacts, Section
from cxrray.representations import display_order
from cxrray.stats.delong import DelongTest, auroc_cov, paired_test, unpaired_test
from cxrray.stats.multiplicity import bonferroni, holm

LABEL = ("representation", "backbone", "method", "pretraining", "design")  # a trial's cell, as the pairs name it


def label_columns(aurocs: pl.DataFrame) -> list[str]:
    return [c for c in LABEL if c in aurocs.columns]


def label_parts(aurocs: pl.DataFrame) -> dict[str, tuple[str, ...]]:
    """Each pair label (``original.resnet18.standard.none.random``) -> its parts, read from the trials (a value
    may hold a dot itself: ``short_sex_0.5``)."""
    cols = label_columns(aurocs)
    return {".".join(str(r[c]) for c in cols): tuple(str(r[c]) for c in cols) for r in aurocs.iter_rows(named=True)}


def _shared_covariances(scored: Sequence[tuple[np.ndarray, ...]]) -> Callable[[int, int], DelongTest | None]:
    """For trials scored on the same test images: the DeLong covariance of all their AUROCs at once (one
    placement computation per trial, ``delong.auroc_cov``), so each pair's paired test is two lookups instead of
    its own placements. Returns ``test(i, j)``: the paired test of trials i and j from the shared covariance, or
    None where ``paired_test`` must decide (no spread in the difference: its exact test; another test set)."""
    blocks: dict[bytes, list[int]] = {}
    for i, (rows, y, _, _) in enumerate(scored):
        blocks.setdefault(rows.tobytes() + y.tobytes(), []).append(i)
    block_of: dict[int, int] = {}
    cov_of: dict[int, tuple[np.ndarray, np.ndarray, dict[int, int]]] = {}
    for b, members in enumerate(blocks.values()):
        if len(members) > 2:
            _, y, _, g = scored[members[0]]
            aucs, cov = auroc_cov(y, np.vstack([scored[i][2] for i in members]), g)
            cov_of[b] = (aucs, cov, {i: k for k, i in enumerate(members)})
            block_of |= {i: b for i in members}

    def test(i: int, j: int) -> DelongTest | None:
        if i not in block_of or block_of.get(j) != block_of[i]:
            return None
        aucs, cov, at = cov_of[block_of[i]]
        a, b = at[i], at[j]
        var = cov[a, a] + cov[b, b] - 2 * cov[a, b]
        if not np.isfinite(var) or var <= 1e-15:
            return None
        z = (aucs[a] - aucs[b]) / np.sqrt(var)
        return DelongTest(float(aucs[a]), float(aucs[b]), float(z), float(2 * stats.norm.sf(abs(z))))

    return test


def pairwise_tests(predictions: Predictions, aurocs: pl.DataFrame,
                   family: Sequence[str] = ("study", "task", "seed", "fold")) -> pl.DataFrame:
    """DeLong test for every pair of trials within each family, with Bonferroni and Holm adjustment."""
    family = [c for c in family if c in aurocs.columns]
    label = label_columns(aurocs)
    out = []
    usable = aurocs.drop_nans("auroc").filter(pl.col("degenerate") == "") if "degenerate" in aurocs.columns \
        else aurocs.drop_nans("auroc")
    by: list[str | pl.Expr] = [*family] or [pl.lit(0).alias("_all")]
    # the trials in the order the families visit them (the families' frames are made one at a time: held
    # together, 10,000 one-trial families took 120 MiB)
    plan = usable.group_by(by, maintain_order=True).agg("trial_id")["trial_id"].explode()
    test = by_trial(predictions, plan)  # read family by family
    for key, group in usable.group_by(by, maintain_order=True):
        rows = []
        trials = list(group.iter_rows(named=True))
        scored = [trial_scores(test, t) for t in trials]
        shared = _shared_covariances(scored)
        for (i, a), (j, b) in itertools.combinations(enumerate(trials), 2):
            ra, ya, sa, ga = scored[i]
            rb, yb, sb, gb = scored[j]
            paired = np.array_equal(ra, rb)
            t = shared(i, j) if paired else None
            if t is None:
                t = paired_test(ya, sa, sb, groups=ga) if paired else unpaired_test(ya, sa, yb, sb, ga, gb)
            rows.append({"family": ", ".join(f"{c} {v}" for c, v in zip(family, key, strict=True)) if family else "all",
                         "a": ".".join(str(a[c]) for c in label), "b": ".".join(str(b[c]) for c in label),
                         "auroc_a": a["auroc"], "auroc_b": b["auroc"], "test": "paired" if paired else "unpaired",
                         "stat": t.stat, "p": t.p})
        if rows:
            p = [r["p"] for r in rows]
            for r, pb, ph in zip(rows, bonferroni(p), holm(p), strict=True):
                r |= {"p_bonferroni": float(pb), "p_holm": float(ph), "n_tests": len(rows)}
            out.extend(rows)
    return pl.DataFrame(out, infer_schema_length=None) if out else pl.DataFrame()


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


def design_drops(predictions: Predictions, aurocs: pl.DataFrame, level: float = 0.95) -> pl.DataFrame:
    """Hasan et al.'s bias measure: AUROC of the single and multiple designs minus the independent one
    (per backbone, task and seed; the mean over folds), with the unpaired DeLong CI and p of the drop; the
    variance of a fold mean includes the between-fold spread (``mean_variance``)."""
    if "design" not in aurocs.columns or "independent" not in set(aurocs["design"]):
        return pl.DataFrame()
    z = stats.norm.ppf(0.5 + level / 2)
    keys = [c for c in ("backbone", "method", "task", "seed") if c in aurocs.columns]
    rows = []
    usable = aurocs.drop_nans("auroc")
    test = by_trial(predictions, usable.group_by(keys, "design", maintain_order=True).agg("trial_id")["trial_id"]
                    .explode())
    for key, group in usable.group_by(keys, maintain_order=True):
        stats_by: dict[str, tuple[float, float, int]] = {}
        for (design,), part in group.group_by("design", maintain_order=True):
            aucs: list[float] = []
            variances: list[float] = []
            for trial in part.iter_rows(named=True):
                _, y, s, g = trial_scores(test, trial)
                a, v = auroc_cov(y, s[None, :], g)
                aucs.append(float(a[0]))
                variances.append(float(v[0, 0]))
            stats_by[str(design)] = (float(np.mean(aucs)), mean_variance(aucs, variances), len(aucs))
        if "independent" not in stats_by:
            continue
        ind, v_ind, _ = stats_by["independent"]
        for design in ("single", "multiple"):
            if design in stats_by:
                auc, v_design, k = stats_by[design]
                se = np.sqrt(v_design + v_ind)
                drop = auc - ind
                rows.append(dict(zip(keys, key, strict=True)) | {
                    "design": design, "auroc": auc, "folds": k, "auroc_independent": ind, "drop": drop,
                    "drop_lo": drop - z * se, "drop_hi": drop + z * se,
                    "p": float(2 * stats.norm.sf(abs(drop) / se)) if se > 0 else float("nan")})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def pvalue_matrices(pairs: pl.DataFrame, parts_of: dict[str, tuple[str, ...]] | None = None
                    ) -> list[tuple[str, pl.DataFrame]]:
    """Per family: (heading, the pairwise p-value matrix, raw above the diagonal and Holm-adjusted below). Cells
    are named by the parts of their label that vary within the family (``lungs_removed / resnet18``, not
    ``lungs_removed.resnet18.standard.none.random``), in protocol order; the diagonal is empty (None)."""
    out = []
    for (family,), g in pairs.group_by("family", maintain_order=True):
        full = sorted(set(g["a"]) | set(g["b"]))
        parts = [list((parts_of or {}).get(n) or n.split(".")) for n in full]
        width = min(len(p) for p in parts)
        varying = [k for k in range(width) if len({p[k] for p in parts}) > 1]
        short = {n: " / ".join(p[k] for k in varying) or n for n, p in zip(full, parts, strict=True)}
        first = {n: p[0] for n, p in zip(full, parts, strict=True)}
        names = sorted(full, key=lambda n: (display_order(sorted(set(first.values()))).index(first[n]), n))
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
    """DeLong tests between every pair of trials of a family (Bonferroni, Holm)."""
    a = Artifacts()
    pairs = pairwise_tests(run.predictions, run.aurocs, run.options.family) if run.aurocs.height else pl.DataFrame()
    if not pairs.is_empty():
        a.tables["delong_pairs"] = pairs
        a.text += (f"\n\nDeLong tests: {pairs.height} pair(s) in {pairs['family'].n_unique()} famil(ies); "
                   f"{int((pairs['p'] < 0.05).sum())} with raw p < 0.05, {int((pairs['p_holm'] < 0.05).sum())} after "
                   f"Holm, {int((pairs['p_bonferroni'] < 0.05).sum())} after Bonferroni (analysis/delong_pairs.csv).")
    a.sections = [Section("DeLong p-values", extra=tuple(pvalue_matrices(pairs, label_parts(run.aurocs)))
                          if pairs.height else (),
                          note="" if pairs.height else "fewer than two trials: nothing to compare")]
    return a
