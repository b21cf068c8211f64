"""Per-trial test AUROC with DeLong CIs, and the representation x backbone table.

Computed only from the stored per-image predictions (``predictions.parquet``),
so the analysis reruns on any finished or partial run without retraining.
The score is the probability of COVID-19 (class ``CVP``), present in every task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cxrray.analysis.compare import design_drops, pairwise_tests, shortcut_findings, shortcut_sentences
from cxrray.analysis.delong import auroc_ci
from cxrray.analysis.metrics import cell_summary, confusion_matrices, severity_accuracy, trial_metrics
from cxrray.analysis.probe import source_probe
from cxrray.analysis.report import write_report
from cxrray.analysis.saliency_report import plot_gradcam_grid, plot_saliency_bars, saliency_tables

POSITIVE = "CVP"
ROW_ORDER = ("original", "lungs_isolated", "lungs_removed", "lungs_framed", "lungs_boxed_out")


def trial_aurocs(predictions: pl.DataFrame, results: pl.DataFrame, split: str = "test",
                 level: float = 0.95) -> pl.DataFrame:
    """One row per finished trial: spec fields, AUROC of CVP vs rest, DeLong CI, case counts."""
    rows = []
    test = predictions.filter(pl.col("split") == split)
    for trial_id, part in test.group_by("trial_id", maintain_order=True):
        if f"prob_{POSITIVE}" not in part.columns or part[f"prob_{POSITIVE}"].null_count() == part.height:
            continue  # a pretraining phase (ChestX-ray14, pneumonia): not a COVID-19 trial
        y = (part["label"] == POSITIVE).to_numpy()
        score = part[f"prob_{POSITIVE}"].to_numpy()
        if y.all() or not y.any():
            rows.append({"trial_id": trial_id[0], "auroc": np.nan, "ci_lo": np.nan, "ci_hi": np.nan,
                         "n_pos": int(y.sum()), "n_neg": int((~y).sum())})
            continue
        ci = auroc_ci(y, score, level)
        rows.append({"trial_id": trial_id[0], "auroc": ci.auc, "ci_lo": ci.lo, "ci_hi": ci.hi,
                     "n_pos": ci.n_pos, "n_neg": ci.n_neg})
    aur = pl.DataFrame(rows, schema={"trial_id": pl.Utf8, "auroc": pl.Float64, "ci_lo": pl.Float64,
                                     "ci_hi": pl.Float64, "n_pos": pl.Int64, "n_neg": pl.Int64})
    keep = [c for c in ("trial_id", "study", "representation", "backbone", "method", "task", "pretraining", "design",
                        "fold", "seed", "init", "best_val_auroc") if c in results.columns]
    return results.select(keep).join(aur, on="trial_id", how="inner")


def select_by_validation(aurocs: pl.DataFrame) -> pl.DataFrame:
    """Where one protocol cell (axes, backbone, fold, seed) has several hyper-parameter settings, keep the
    setting with the best validation AUROC: the test set never chooses."""
    cell = [c for c in (*AXES, "backbone", "fold", "seed") if c in aurocs.columns]
    return (aurocs.sort("best_val_auroc", descending=True, nulls_last=True).group_by(cell, maintain_order=True)
            .first().sort("trial_id"))


def _order(reps: list[str]) -> list[str]:
    known = [r for r in ROW_ORDER if r in reps]
    return known + sorted(r for r in reps if r not in known)


AXES = ("representation", "pretraining", "design", "task", "method")


def row_axis(aurocs: pl.DataFrame) -> tuple[str, pl.DataFrame]:
    """The axis a study varies (representation for hide and seek, pretraining path for staged,
    design and task for source bias); several varying axes are joined into one ``condition`` label."""
    varying = [a for a in AXES if a in aurocs.columns and aurocs[a].n_unique() > 1]
    if len(varying) <= 1:
        return (varying[0] if varying else "representation"), aurocs
    label = pl.concat_str([pl.col(a) for a in varying], separator=" / ").alias("condition")
    return "condition", aurocs.with_columns(label)


def auroc_table(aurocs: pl.DataFrame, rows: str = "representation") -> pl.DataFrame:
    """``rows`` x backbone table of 'AUROC [lo, hi]' strings (seeds listed side by side)."""
    cells = aurocs.with_columns(
        pl.struct("auroc", "ci_lo", "ci_hi").map_elements(
            lambda r: f"{r['auroc']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]", return_dtype=pl.Utf8).alias("cell")
    ).group_by(rows, "backbone").agg(pl.col("cell").sort_by(*[c for c in ("fold", "seed") if c in aurocs.columns])
                                     .str.join("; "))
    wide = cells.pivot(on="backbone", index=rows, values="cell")
    order = _order(wide[rows].to_list())
    wide = wide.with_columns(pl.col(rows).replace_strict({r: i for i, r in enumerate(order)})
                             .alias("_o")).sort("_o").drop("_o")
    return wide.select(rows, *sorted(c for c in wide.columns if c != rows))


def format_table(table: pl.DataFrame, title: str) -> str:
    """Plain-text table for the terminal and the markdown report."""
    cols = table.columns
    body = [[str(v) if v is not None else "-" for v in r] for r in table.iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, "", line(cols), sep, *(line(r) for r in body)])


def plot_aurocs(aurocs: pl.DataFrame, path: Path, rows: str = "representation") -> None:
    """Forest plot: AUROC with 95 % CI per representation (or path), one colour per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reps = _order(aurocs[rows].unique().to_list())
    bbs = sorted(aurocs["backbone"].unique().to_list())
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(reps) + 1.5))
    for j, bb in enumerate(bbs):
        part = aurocs.filter(pl.col("backbone") == bb)
        for r in part.iter_rows(named=True):
            y = reps.index(r[rows]) + (j - (len(bbs) - 1) / 2) * 0.8 / max(len(bbs), 1)
            ax.errorbar(r["auroc"], y, xerr=[[r["auroc"] - r["ci_lo"]], [r["ci_hi"] - r["auroc"]]], fmt="o",
                        color=f"C{j}", capsize=3)
    handles = [plt.Line2D([], [], color=f"C{j}", marker="o", ls="", label=bb) for j, bb in enumerate(bbs)]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(reps)), reps)
    ax.invert_yaxis()
    ax.set_xlim(0.3, 1.02)
    ax.set_xlabel("test AUROC (COVID-19 vs rest), 95 % DeLong CI")
    ax.set_title("Hide and seek: can the model still tell without the lungs?" if rows == "representation"
                 else "Staged pretraining: test AUROC per path")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


FAMILY = ("study", "task", "seed", "fold")


def analyze(run_dir: str | Path, saliency: int = 32, family: tuple[str, ...] = FAMILY, lime: int = 0) -> str:
    """Recompute every table from ``run_dir``'s stored predictions; write them under ``analysis/``.

    ``saliency``: test images per trial for Grad-CAM from the saved models (0 skips it).
    ``family``: the columns whose equal values make one family of DeLong tests (adjusted together).
    ``lime``: of those, images per trial also explained with LIME (0 skips it; slower than Grad-CAM).
    """
    run_dir = Path(run_dir)
    pred_path, res_path = run_dir / "predictions.parquet", run_dir / "results.parquet"
    if not pred_path.exists() or not res_path.exists():
        raise FileNotFoundError(f"{run_dir}: no predictions.parquet/results.parquet (has a trial finished?)")
    predictions, results = pl.read_parquet(pred_path), pl.read_parquet(res_path)
    aurocs = trial_aurocs(predictions, results)
    n_trials = aurocs.height
    aurocs = select_by_validation(aurocs)
    out = run_dir / "analysis"
    out.mkdir(exist_ok=True)
    aurocs.write_csv(out / "trial_aurocs.csv")
    rows, aurocs = row_axis(aurocs)
    table = auroc_table(aurocs, rows)
    table.write_csv(out / "auroc_table.csv")
    n_pos, n_neg = (int(aurocs["n_pos"].max()), int(aurocs["n_neg"].max())) if aurocs.height else (0, 0)
    chosen = (f"; per cell the best of {n_trials // max(aurocs.height, 1)} hyper-parameter settings by "
              "validation AUROC") if n_trials > aurocs.height else ""
    text = format_table(table, f"Test AUROC, COVID-19 vs rest, with 95 % DeLong CI "
                               f"({n_pos} positive / {n_neg} negative test images{chosen})")
    failed = results.filter(pl.col("status") != "finished")
    if failed.height:
        text += f"\n\n{failed.height} trial(s) without predictions: " + ", ".join(failed["run_name"].to_list())
    if aurocs.height:
        plot_aurocs(aurocs.drop_nans("auroc"), out / "auroc_forest.png", rows)
    text += _statistics(predictions, results, aurocs, out, family)
    if saliency and aurocs.height:
        text += _saliency(run_dir, aurocs, out, saliency, min(lime, saliency))
    text += _bias(run_dir, predictions, results, aurocs, out)
    (out / "auroc_table.md").write_text(text + "\n")
    report = write_report(run_dir, text)
    return text + f"\n\nReport: {report}"


def _bias(run_dir: Path, predictions: pl.DataFrame, results: pl.DataFrame, aurocs: pl.DataFrame,
          out: Path) -> str:
    """Source probe on the run's data (per representation) and the design drop (source-bias study)."""
    text = ""
    drops = design_drops(predictions, aurocs)
    if not drops.is_empty():
        drops.write_csv(out / "design_drops.csv")
        text += "\n\nDataset-design bias (AUROC minus the independent design's, 95 % CI):\n" + "\n".join(
            f"- {r['backbone']} {r['task']} {r['design']}: {r['auroc']:.3f} vs independent "
            f"{r['auroc_independent']:.3f}, drop {r['drop']:+.3f} [{r['drop_lo']:+.3f}, {r['drop_hi']:+.3f}], "
            f"p = {r['p']:.3g}" for r in drops.iter_rows(named=True))
    data_ids = results.filter(pl.col("trial_id").is_in(aurocs["trial_id"].implode()))
    if data_ids.is_empty() or "image_size" not in data_ids.columns:
        return text
    first = data_ids.row(0, named=True)
    shard = run_dir / "shards" / f"{first['data_id']}-{first['image_size']}px"
    if (shard / "train").exists() and (shard / "test").exists():
        probe = source_probe(shard, ROW_ORDER)
        if not probe.is_empty():
            probe.write_csv(out / "source_probe.csv")
            text += (f"\n\nSource probe (logistic regression on 16x16 thumbnails; chance "
                     f"{probe['chance'][0]:.2f} for {probe['n_sources'][0]} sources): " + "; ".join(
                         f"{r['representation']} {r['balanced_accuracy']:.2f}" for r in probe.iter_rows(named=True))
                     + " balanced accuracy.")
            hidden = probe.filter(pl.col("representation").is_in(["lungs_removed", "lungs_boxed_out"]))
            found = hidden.filter(pl.col("p_vs_majority") < 0.05)["representation"].to_list()
            text += (f" With the lungs hidden ({', '.join(found)}) the hospital is still identifiable "
                     f"(binomial p < 0.05 against the majority-source rate)." if found else
                     " With the lungs hidden the probe is not better than guessing the majority source.")
    return text


def _saliency(run_dir: Path, aurocs: pl.DataFrame, out: Path, limit: int, lime: int = 0) -> str:
    """Grad-CAM (and LIME) shares inside the lungs (CSV, bar chart) and example grids; a line per trial."""
    per_image, summary, maps = saliency_tables(run_dir, aurocs, limit, lime)
    if summary.is_empty():
        return ""
    per_image.write_csv(out / "saliency_per_image.csv")
    summary.write_csv(out / "saliency_in_lungs.csv")
    plot_saliency_bars(summary, out / "saliency_in_lungs.png")
    plot_gradcam_grid(maps, out / "gradcam_grid.png")
    lines = [f"- {r['representation']} / {r['backbone']}: " + (
        f"{r['lung_share_pred']:.2f} [{r['lung_share_pred_lo']:.2f}, {r['lung_share_pred_hi']:.2f}] of the "
        f"Grad-CAM mass in the lungs (lung area {r['lung_area']:.2f})" if r["lung_share_pred"] == r["lung_share_pred"]
        else "no Grad-CAM signal (every map empty)") + (
        f"; LIME {r['lime_share_pred']:.2f} [{r['lime_share_pred_lo']:.2f}, {r['lime_share_pred_hi']:.2f}]"
        if lime and r.get("lime_share_pred") == r.get("lime_share_pred") else "") for r in summary.iter_rows(named=True)]
    return "\n\nSaliency inside the lungs (predicted class, 95 % bootstrap CI):\n" + "\n".join(lines)


def _statistics(predictions: pl.DataFrame, results: pl.DataFrame, aurocs: pl.DataFrame, out: Path,
                family: tuple[str, ...]) -> str:
    """Metrics per trial and cell, severity accuracy, DeLong pairs, shortcut findings: CSVs + a text summary."""
    per_trial = trial_metrics(predictions, results)
    if per_trial.is_empty():
        return ""
    per_trial = per_trial.filter(pl.col("trial_id").is_in(aurocs["trial_id"].implode()))
    per_trial.write_csv(out / "trial_metrics.csv")
    cell_summary(per_trial, predictions).write_csv(out / "cell_metrics.csv")
    (out / "confusion").mkdir(exist_ok=True)
    for tid, cm in confusion_matrices(predictions.filter(pl.col("trial_id").is_in(per_trial["trial_id"].implode()))
                                      ).items():
        cm.write_csv(out / "confusion" / f"{tid}.csv")
    severity = severity_accuracy(predictions.filter(pl.col("trial_id").is_in(per_trial["trial_id"].implode())),
                                 results)
    if not severity.is_empty():
        severity.write_csv(out / "severity_accuracy.csv")
    pairs = pairwise_tests(predictions, aurocs, family)
    text = ""
    if not pairs.is_empty():
        pairs.write_csv(out / "delong_pairs.csv")
        text += (f"\n\nDeLong tests: {pairs.height} pair(s) in {pairs['family'].n_unique()} famil(ies); "
                 f"{int((pairs['p'] < 0.05).sum())} with raw p < 0.05, {int((pairs['p_holm'] < 0.05).sum())} after "
                 f"Holm, {int((pairs['p_bonferroni'] < 0.05).sum())} after Bonferroni (analysis/delong_pairs.csv).")
    findings = shortcut_findings(predictions, aurocs)
    if not findings.is_empty():
        findings.write_csv(out / "shortcut_findings.csv")
        text += "\n\nShortcut findings (rule: lower bound of the Bonferroni-corrected CI above 0.5):\n" + \
            "\n".join(f"- {s}" for s in shortcut_sentences(findings))
    return text
