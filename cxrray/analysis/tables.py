"""Per-trial test AUROC with DeLong CIs, and the representation x backbone table.

Computed only from the stored per-image predictions (``predictions.parquet``),
so the analysis reruns on any finished or partial run without retraining.
The score is the probability of COVID-19 (class ``CVP``), present in every task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cxrray.analysis.delong import auroc_ci

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
    keep = [c for c in ("trial_id", "study", "representation", "backbone", "task", "pretraining", "design",
                        "seed", "init", "best_val_auroc") if c in results.columns]
    return results.select(keep).join(aur, on="trial_id", how="inner")


def _order(reps: list[str]) -> list[str]:
    known = [r for r in ROW_ORDER if r in reps]
    return known + sorted(r for r in reps if r not in known)


def row_axis(aurocs: pl.DataFrame) -> str:
    """The axis a study varies: representation (hide and seek) or pretraining path (staged)."""
    if aurocs.height and aurocs["representation"].n_unique() == 1 and aurocs["pretraining"].n_unique() > 1:
        return "pretraining"
    return "representation"


def auroc_table(aurocs: pl.DataFrame, rows: str = "representation") -> pl.DataFrame:
    """``rows`` x backbone table of 'AUROC [lo, hi]' strings (seeds listed side by side)."""
    cells = aurocs.with_columns(
        pl.struct("auroc", "ci_lo", "ci_hi").map_elements(
            lambda r: f"{r['auroc']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]", return_dtype=pl.Utf8).alias("cell")
    ).group_by(rows, "backbone").agg(pl.col("cell").sort_by("seed").str.join("; "))
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


def analyze(run_dir: str | Path) -> str:
    """Recompute every table from ``run_dir``'s stored predictions; write them under ``analysis/``."""
    run_dir = Path(run_dir)
    pred_path, res_path = run_dir / "predictions.parquet", run_dir / "results.parquet"
    if not pred_path.exists() or not res_path.exists():
        raise FileNotFoundError(f"{run_dir}: no predictions.parquet/results.parquet (has a trial finished?)")
    predictions, results = pl.read_parquet(pred_path), pl.read_parquet(res_path)
    aurocs = trial_aurocs(predictions, results)
    out = run_dir / "analysis"
    out.mkdir(exist_ok=True)
    aurocs.write_csv(out / "trial_aurocs.csv")
    rows = row_axis(aurocs)
    table = auroc_table(aurocs, rows)
    table.write_csv(out / "auroc_table.csv")
    n_pos, n_neg = (int(aurocs["n_pos"].max()), int(aurocs["n_neg"].max())) if aurocs.height else (0, 0)
    text = format_table(table, f"Test AUROC, COVID-19 vs rest, with 95 % DeLong CI "
                               f"({n_pos} positive / {n_neg} negative test images)")
    failed = results.filter(pl.col("status") != "finished")
    if failed.height:
        text += f"\n\n{failed.height} trial(s) without predictions: " + ", ".join(failed["run_name"].to_list())
    (out / "auroc_table.md").write_text(text + "\n")
    if aurocs.height:
        plot_aurocs(aurocs.drop_nans("auroc"), out / "auroc_forest.png", rows)
    return text
