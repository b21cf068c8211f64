"""Saliency-inside-lungs per cell, with bootstrap CIs, and Grad-CAM grids (seed figure 3 of Sadre et al.).
Step ``saliency``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cxrray.analysis.saliency import bootstrap_ci, trial_saliency
from cxrray.analysis.steps import Artifacts, LoadedRun, Section, analysis_step
from cxrray.config import RunLayout


def saliency_tables(run_dir: Path, aurocs: pl.DataFrame, limit: int = 64, lime: int = 0
                    ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict]]:
    """(per-image shares, per-trial summary with CIs, maps per trial) for every softmax trial in ``aurocs``;
    ``lime`` images per trial also get a LIME share."""
    per_image, summary, maps = [], [], {}
    layout = RunLayout(Path(run_dir))
    for r in aurocs.iter_rows(named=True):
        if not layout.trial(r["trial_id"]).model.exists():
            continue  # a method whose weights Grad-CAM cannot explain (FuCiTNet's fused two-pass model)
        try:
            rows, m = trial_saliency(run_dir, r["trial_id"], limit=limit, lime=lime)
        except ValueError:  # multilabel / hierarchical: no per-class map
            continue
        per_image.append(rows)
        maps[r["trial_id"]] = m | {"representation": r["representation"], "backbone": r["backbone"]}
        entry = {k: r[k] for k in ("trial_id", "representation", "backbone", "seed") if k in r}
        for col in ("lung_share_pred", "box_share_pred", "lung_share_counter", "lime_share_pred")[:3 + bool(lime)]:
            v = rows[col].to_numpy()
            lo, hi = bootstrap_ci(v, groups=rows["patient_id"].to_numpy())  # by patient
            entry |= {col: float(np.nanmean(v)) if (~np.isnan(v)).any() else np.nan, f"{col}_lo": lo,
                      f"{col}_hi": hi}
        entry |= {"lung_area": float(rows["lung_area"].mean()), "box_area": float(rows["box_area"].mean()),
                  "cam_layer": rows["cam_layer"][0], "cam_cells": rows["cam_cells"][0], "note": rows["note"][0]}
        summary.append(entry)
    if not summary:
        return pl.DataFrame(), pl.DataFrame(), {}
    return pl.concat(per_image), pl.DataFrame(summary, infer_schema_length=None), maps


def plot_saliency_bars(summary: pl.DataFrame, path: Path) -> None:
    """Share of Grad-CAM mass inside the lungs per trial (95 % bootstrap CI); the dashed line is the lung
    area share, what a map spread evenly over the image would give."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['representation']}\n{r['backbone']}" for r in summary.iter_rows(named=True)]
    y = summary["lung_share_pred"].to_numpy()
    lo, hi = summary["lung_share_pred_lo"].to_numpy(), summary["lung_share_pred_hi"].to_numpy()
    err = np.abs(np.vstack([y - lo, hi - y]))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    ax.bar(range(len(y)), y, yerr=np.nan_to_num(err), capsize=3, color="C0", label="predicted class")
    ax.plot(range(len(y)), summary["lung_area"].to_numpy(), "k_", markersize=20, label="lung area share")
    ax.set_xticks(range(len(y)), labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Grad-CAM mass inside the lungs")
    ax.legend(fontsize=8)
    ax.set_title("Where the models look: saliency inside the lung mask")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gradcam_grid(maps: dict[str, dict], path: Path, per_class: int = 2) -> None:
    """Rows: representation x backbone; columns: ``per_class`` test images of each predicted class, with
    the Grad-CAM overlay and the lung contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = list(maps.values())
    classes = sorted({c for m in trials for c in m["classes"]})
    ncol = per_class * len(classes)
    fig, axes = plt.subplots(len(trials), ncol, figsize=(1.6 * ncol, 1.7 * len(trials)), squeeze=False)
    for i, m in enumerate(trials):
        picks = [j for c in classes for j in np.flatnonzero(m["classes"] == c)[:per_class].tolist()
                 + [None] * max(0, per_class - int((m["classes"] == c).sum()))]
        for k, j in enumerate(picks):
            ax = axes[i, k]
            ax.axis("off")
            if j is None:
                continue
            ax.imshow(m["image"][j], cmap="gray")
            ax.imshow(m["pred"][j], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.contour(m["mask"][j], levels=[0.5], colors="white", linewidths=0.6)
            if i == 0:
                ax.set_title(f"pred {m['classes'][j]}", fontsize=7)
        axes[i, 0].text(-0.1, 0.5, f"{m['representation']}\n{m['backbone']}", transform=axes[i, 0].transAxes,
                        ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@analysis_step(order=40)
def saliency(run: LoadedRun) -> Artifacts:
    """Grad-CAM (and LIME) shares inside the lungs (CSV, bar chart) and example grids; a line per trial."""
    a = Artifacts(sections=[Section("Saliency inside the lungs", tables=("saliency_in_lungs",),
                                    figures=("saliency_in_lungs", "gradcam_grid"))])
    limit, lime = run.options.saliency, min(run.options.lime, run.options.saliency)
    if not limit or not run.aurocs.height:
        return a
    per_image, summary, maps = saliency_tables(run.layout.root, run.aurocs, limit, lime)
    if summary.is_empty():
        return a
    a.tables |= {"saliency_per_image": per_image, "saliency_in_lungs": summary}
    plot_saliency_bars(summary, run.figure("saliency_in_lungs"))
    plot_gradcam_grid(maps, run.figure("gradcam_grid"))
    a.figures |= {"saliency_in_lungs": "Grad-CAM mass inside the lung mask per trial",
                  "gradcam_grid": "Grad-CAM examples per representation and backbone"}
    lines = [f"- {r['representation']} / {r['backbone']}: " + (
        r["note"] if r["note"] else
        f"{r['lung_share_pred']:.2f} [{r['lung_share_pred_lo']:.2f}, {r['lung_share_pred_hi']:.2f}] of the "
        f"Grad-CAM mass in the lungs (lung area {r['lung_area']:.2f}); {r['box_share_pred']:.2f} in the lung box "
        f"(box area {r['box_area']:.2f}); map {r['cam_cells']} at {r['cam_layer']}"
        if r["lung_share_pred"] == r["lung_share_pred"] else "no Grad-CAM signal (every map empty)") + (
        f"; LIME {r['lime_share_pred']:.2f} [{r['lime_share_pred_lo']:.2f}, {r['lime_share_pred_hi']:.2f}]"
        if lime and r.get("lime_share_pred") == r.get("lime_share_pred") else "")
        for r in summary.iter_rows(named=True)]
    a.text = "\n\nSaliency inside the lungs (predicted class, 95 % bootstrap CI by patient; maps placed by the " \
             "layer's geometry):\n" + "\n".join(lines)
    return a
