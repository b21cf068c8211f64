"""Every analysis figure, in one visual language (``cxrray.plots.palette``): rows in protocol order, one
colour per backbone and per representation across figures, verdict colours, values that cannot be shown
said in words. matplotlib (Agg) only; each function writes one PNG.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl

from cxrray.data.tasks import TASKS
from cxrray.data.trial_rows import TrialRows
from cxrray.plots.palette import VERDICTS, backbone_colours, protocol_sorted, row_colours
from cxrray.representations import display_order
from cxrray.verdicts.verdict import Verdict


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, imported on first use (a fast ``--help``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SEEDS_SHOWN = 4  # seeds a per-trial figure draws: one line style each; more are a blur (and 10,000 trials a
# forest plot 360,000 pixels tall); the tables hold every trial


def first_seeds(aurocs: pl.DataFrame, k: int = SEEDS_SHOWN) -> tuple[pl.DataFrame, int]:
    """The trials of the run's first ``k`` seeds, and how many seeds are left out."""
    if "seed" not in aurocs.columns:
        return aurocs, 0
    seeds = sorted(aurocs["seed"].drop_nulls().unique().to_list())
    return aurocs.filter(pl.col("seed").is_in(seeds[:k])), max(len(seeds) - k, 0)


def _key(r: dict) -> tuple:
    return tuple(r.get(c) for c in ("representation", "backbone", "seed", "fold"))


def plot_forest(aurocs: pl.DataFrame, findings: pl.DataFrame, path: Path, rows: str, title: str,
                xlabel: str) -> int:
    """AUROC with its 95 % CI per trial of the first ``SEEDS_SHOWN`` seeds (colour: backbone), rows in protocol
    order; a lung-hiding trial also shows its Bonferroni-corrected CI (the one its verdict is judged on) and its
    verdict in words. Below-chance values stay on the axis; a degenerate model is a hollow grey marker. Returns
    the seeds left out (for the caption)."""
    plt = pyplot()
    aurocs, left = first_seeds(aurocs.drop_nans("auroc"))
    aurocs = protocol_sorted(aurocs, rows)
    labels = display_order([str(x) for x in aurocs[rows].unique().to_list()])
    colours = backbone_colours(aurocs["backbone"].to_list())
    found = {_key(r): r for r in findings.iter_rows(named=True)} if not findings.is_empty() else {}
    groups = {lab: aurocs.filter(pl.col(rows).cast(pl.Utf8) == lab) for lab in labels}
    fig, ax = plt.subplots(figsize=(9, 0.3 * max(aurocs.height, 2) + 0.2 * len(labels) + 1.4))
    y, ticks = 0.0, []
    lo_all = min([0.3, *(aurocs["ci_lo"].drop_nans().to_list())])
    for lab in labels:
        part = groups[lab]
        start = y
        for r in part.iter_rows(named=True):
            f = found.get(_key(r))
            if f is not None and f["ci_lo_corrected"] == f["ci_lo_corrected"]:
                ax.plot([f["ci_lo_corrected"], f["ci_hi_corrected"]], [y, y], color=VERDICTS[f["verdict"]][0],
                        lw=7, alpha=0.25, solid_capstyle="butt")
                lo_all = min(lo_all, f["ci_lo_corrected"])
            degenerate = bool(r.get("degenerate"))
            c = "#9e9e9e" if degenerate else colours[r["backbone"]]
            ax.errorbar(r["auroc"], y, xerr=[[r["auroc"] - r["ci_lo"]], [r["ci_hi"] - r["auroc"]]], fmt="o",
                        color=c, mfc="white" if degenerate else c, capsize=3, ms=6)
            verdict = Verdict.DEGENERATE.word if degenerate else (f["verdict"] if f is not None else "")
            if verdict:
                ax.text(1.03, y, verdict.replace("_", " ").upper(), color=VERDICTS[verdict][0], va="center",
                        fontsize=8, fontweight="bold", transform=ax.get_yaxis_transform())
            y += 1
        ticks.append(((start + y - 1) / 2, lab))
        ax.axhline(y - 0.5 + 0.25, color="#e0e0e0", lw=0.8)
        y += 0.5
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks([t for t, _ in ticks], [lab for _, lab in ticks])
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, lo_all - 0.05), 1.015)
    ax.set_xlabel(xlabel)
    ax.set_title(title + (f"\n(the first {SEEDS_SHOWN} seeds drawn; {left} more in the tables)" if left else ""),
                 fontsize=11)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="-", label=bb) for bb, c in colours.items()]
    handles.append(plt.Line2D([], [], color=Verdict.SHORTCUT.colour, lw=7, alpha=0.25,
                              label="corrected CI (lung-hiding; colour = verdict)"))
    handles.append(plt.Line2D([], [], color="grey", ls="--", label="chance (0.5)"))
    # Below the axis label whatever the plot's height (a fixed offset in font sizes, not in axes fractions:
    # with two rows a fraction of the axes lands on the label).
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), borderaxespad=3.6,
              ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return left


def plot_roc_curves(predictions: pl.DataFrame, aurocs: pl.DataFrame, path: Path, rows: str) -> int:
    """ROC curves (the task's positive class vs rest), one panel per backbone, one colour per row label (the same
    in every panel), one line style per seed: the first ``SEEDS_SHOWN`` seeds of each; returns the seeds left out
    (0 when every trial is drawn), for the caption."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    seeds = sorted(aurocs["seed"].unique().to_list()) if "seed" in aurocs.columns else [0]
    drawn, left = first_seeds(aurocs)
    test = predictions.filter((pl.col("split") == "test") & pl.col("trial_id").is_in(drawn["trial_id"].implode()))
    of_trial = TrialRows.of(test)  # one sort, not one filter per trial
    backbones = sorted(drawn["backbone"].unique().to_list())
    colours = row_colours([str(x) for x in drawn[rows].unique().to_list()])
    styles = ("-", "--", ":", "-.")
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.6 * len(backbones), 4.4), squeeze=False)
    for ax, bb in zip(axes[0], backbones, strict=True):
        for r in protocol_sorted(drawn.filter(pl.col("backbone") == bb), rows).iter_rows(named=True):
            part = of_trial.rows(r["trial_id"])
            fpr, tpr, _ = roc_curve(*TASKS.get(r["task"]).positive_scores(part))
            seed = r.get("seed", 0)
            name = f"{r[rows]}" + (f" s{seed}" if len(seeds) > 1 else "")
            ax.plot(fpr, tpr, color=colours[str(r[rows])], ls=styles[seeds.index(seed) % len(styles)], lw=1.6,
                    label=f"{name} ({r['auroc']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
        ax.set(title=bb + (f" (the first {SEEDS_SHOWN} seeds of {len(seeds)})" if left else ""),
               xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return left


def plot_saliency_bars(summary: pl.DataFrame, path: Path) -> None:
    """Share of Grad-CAM mass inside the lungs, grouped by representation (protocol order), a bar per backbone
    (its colour) with the 95 % bootstrap CI; a black tick marks the lung area share (what a map spread evenly
    would give). A trial without an interpretable map says so instead of an empty bar."""
    plt = pyplot()
    summary = protocol_sorted(summary)
    reps = display_order(summary["representation"].unique().to_list())
    colours = backbone_colours(summary["backbone"].to_list())
    width = 0.8 / max(len(colours), 1)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.5 * len(reps) * max(len(colours), 1) ** 0.5), 4.4))
    for j, bb in enumerate(colours):
        for r in summary.filter(pl.col("backbone") == bb).iter_rows(named=True):
            x = reps.index(r["representation"]) + (j - (len(colours) - 1) / 2) * width
            v = r["lung_share_pred"]
            if v is None or v != v:
                ax.text(x, 0.03, r["note"].split(" (")[0] if r.get("note") else "no map", rotation=90, fontsize=7,
                        ha="center", va="bottom", color="#555")
                continue
            err = [[max(v - r["lung_share_pred_lo"], 0)], [max(r["lung_share_pred_hi"] - v, 0)]]
            ax.bar(x, v, width * 0.9, yerr=np.nan_to_num(err), capsize=3, color=colours[bb])
            ax.plot([x - width * 0.45, x + width * 0.45], [r["lung_area"]] * 2, color="black", lw=2)
    ax.set_xticks(range(len(reps)), [r.replace("_", " ") for r in reps], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Grad-CAM mass inside the lungs")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=bb) for bb, c in colours.items()]
    handles.append(plt.Line2D([], [], color="black", lw=2, label="lung area share (even map)"))
    ax.legend(handles=handles, fontsize=8, loc="upper right")
    ax.set_title("Where the models look: Grad-CAM inside the lungs the model saw\n(95 % bootstrap CI by patient)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gradcam_grid(maps: dict[str, dict], path: Path, per_class: int = 2) -> None:
    """Rows: trials (representation x backbone, protocol order); columns: ``per_class`` test images of each true
    class. Each cell: the image the model saw (its representation), the Grad-CAM map of the predicted class,
    the lung contour where the model saw the lungs, and the prediction; one colour bar for every map."""
    plt = pyplot()
    order = display_order(list({m["representation"] for m in maps.values()}))
    trials = sorted(maps.values(), key=lambda m: (order.index(m["representation"]), m["backbone"]))
    classes = list(trials[0]["all_classes"]) if trials else []
    ncol = per_class * len(classes)
    fig, axes = plt.subplots(len(trials), ncol, figsize=(1.55 * ncol + 2.2, 1.6 * len(trials) + 0.6),
                             squeeze=False)
    mappable = None
    for i, m in enumerate(trials):
        for c_i, c in enumerate(classes):
            picks = np.flatnonzero(m["truth"] == c)[:per_class].tolist()
            for k in range(per_class):
                ax = axes[i, c_i * per_class + k]
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"true {c} #{k + 1}", fontsize=8)
                if k >= len(picks):
                    ax.text(0.5, 0.5, f"no {c}\ntest image", ha="center", va="center", fontsize=7,
                            transform=ax.transAxes)
                    continue
                j = picks[k]
                ax.imshow(m["seen"][j], cmap="gray")
                cam = m["pred"][j]
                if np.isnan(cam).all():
                    ax.text(0.5, 0.1, "no map", ha="center", fontsize=7, color="yellow", transform=ax.transAxes)
                else:
                    mappable = ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                if m["mask"][j].any():
                    ax.contour(m["mask"][j], levels=[0.5], colors="white", linewidths=0.6)
                ok = m["classes"][j] == c
                ax.set_xlabel(f"pred {m['classes'][j]} {m['prob'][j]:.2f}", fontsize=7,
                              color="#2e7d32" if ok else "#c62828")
        axes[i, 0].set_ylabel(f"{m['representation']}\n{m['backbone']}", fontsize=8, rotation=0, ha="right",
                              va="center", labelpad=8)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02)
        bar.set_label("Grad-CAM (predicted class)", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
