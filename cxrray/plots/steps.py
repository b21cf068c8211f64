"""The figures of single steps (calibration, mask dilation, shortcut testing, transfer), drawn from the tables
and curves the steps hand over; the shared figures (forest, ROC, saliency) are in ``figures``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cxrray.plots.figures import pyplot
from cxrray.plots.palette import VERDICTS, row_colours
from cxrray.representations import display_order
from cxrray.scalars import num
from cxrray.verdicts.verdict import Verdict, tone_of


def plot_reliability(table: pl.DataFrame, curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                     rows: str = "representation", left: int = 0) -> None:
    """Small multiples that stay readable at paper scale: one reliability panel per backbone (9 panels for 225
    trials, not 225), a line per trial coloured by its row (representation), observed frequency against mean
    probability per bin; a miscalibrated trial (after Holm) drawn solid with its bins marked, the others dashed;
    the diagonal a calibrated model follows. ``table``: a row per trial with its ``miscalibrated`` flag, ``ece``
    and ``backbone``; ``curves``: mean probability and observed frequency of its non-empty bins, per trial drawn
    (the first seeds: ``left`` seeds are not drawn, and each panel's title still counts every trial)."""
    plt = pyplot()
    label = rows if rows in table.columns else "run_name"
    colours = row_colours([str(x) for x in table[label].unique(maintain_order=True).to_list()])
    backbones = table["backbone"].unique(maintain_order=True).to_list() if "backbone" in table.columns else ["all"]
    cols = min(len(backbones), 3)
    nrows = -(-len(backbones) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.5 * nrows), squeeze=False)
    for ax, bb in zip(axes.ravel(), backbones, strict=True):
        part = table.filter(pl.col("backbone") == bb) if "backbone" in table.columns else table
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":")
        shown = set()
        drawn = part.filter(pl.col("trial_id").is_in(list(curves)))
        for row in drawn.iter_rows(named=True):
            conf, freq = curves[row["trial_id"]]
            bad = row["miscalibrated"]
            name = str(row[label])
            ax.plot(conf, freq, color=colours[name], lw=1.6 if bad else 1.0, ls="-" if bad else "--",
                    marker="o" if bad else None, ms=4, alpha=0.9,
                    label=None if name in shown else name)
            shown.add(name)
        worst = part.sort("ece", descending=True).row(0, named=True)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed frequency")
        bad_n = int(part["miscalibrated"].sum())
        ax.set_title(f"{bb}: {bad_n:,} of {part.height:,} miscalibrated\n"
                     f"highest ECE {worst['ece']:.3f} ({worst[label]})"
                     + (f"\n{drawn.height:,} drawn: the first seeds" if left else ""), fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    for ax in axes.ravel()[len(backbones):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dilation(table: pl.DataFrame, path: Path, who: list[str]) -> None:
    """Per lung-hiding cell, its AUROC with the interval its verdict reads against the mask's dilation, each
    point coloured by its verdict; the chance line at 0.5 and the original's AUROC dashed (``who``: the columns
    that name a cell)."""
    plt = pyplot()
    cells = list(table.group_by(who, maintain_order=True))
    fig, ax = plt.subplots(1, len(cells), figsize=(3.2 * len(cells) + 0.6, 3.2), squeeze=False, sharey=True)
    for panel, (key, cell) in zip(ax[0], cells, strict=True):
        cell = cell.sort("mask_dilation")
        x = cell["mask_dilation"].to_numpy()
        panel.plot(x, cell["auroc"].to_numpy(), color="#90a4ae", lw=1, zorder=1)
        for r in cell.iter_rows(named=True):
            colour = VERDICTS.get(r["verdict"], ("#37474f",))[0]
            panel.errorbar(r["mask_dilation"], r["auroc"], yerr=[[r["auroc"] - r["ci_lo_corrected"]],
                                                                 [r["ci_hi_corrected"] - r["auroc"]]],
                           fmt="o", color=colour, capsize=3, zorder=2)
            panel.annotate(r["verdict"], (r["mask_dilation"], r["ci_hi_corrected"]), textcoords="offset points",
                           xytext=(0, 4), ha="center", fontsize=7, color=colour)
        if cell["auroc_original"].drop_nans().len():
            panel.axhline(float(cell["auroc_original"].drop_nans()[0]), color="#37474f", ls="--", lw=0.8,
                          label="original")
        panel.axhline(0.5, color="#b0bec5", ls=":", lw=0.8, label="chance")
        panel.set_xticks(sorted(set(x.tolist())))
        panel.set_title(" / ".join(str(k) for k in key), fontsize=9)
        panel.set_xlabel("mask dilation (px at the model's size)")
        panel.set_ylim(0.0, 1.12)
    ax[0][0].set_ylabel("test AUROC, corrected interval")
    ax[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Mask-dilation sensitivity: does the verdict survive a grown mask?", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_short(points: pl.DataFrame, cells: pl.DataFrame, path: Path, cell: list[str], power: float) -> None:
    """Per cell (named by the columns ``cell``): each model's gap against its encoding (labelled by factor), the
    fitted line, the verdict; an inconclusive cell says the slope its models could detect at ``power``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, cells.height, figsize=(max(4.5 * cells.height, 6.5), 3.8), squeeze=False)
    for ax, c in zip(axes[0], cells.iter_rows(named=True), strict=True):
        pts = points.filter(pl.all_horizontal([pl.col(k) == c[k] for k in cell]))
        colour = (tone_of(c["verdict"]) or Verdict.DEGENERATE).colour
        ax.scatter(pts["encoding_auroc"], pts["gap"], color=colour, zorder=2)
        for r in pts.iter_rows(named=True):
            ax.annotate(f"{r['factor']:g}", (r["encoding_auroc"], r["gap"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
        if c["slope"] == c["slope"]:
            x = np.linspace(num(pts["encoding_auroc"].min()), num(pts["encoding_auroc"].max()), 20)
            centre = num(pts["gap"].mean()) + c["slope"] * (x - num(pts["encoding_auroc"].mean()))
            ax.plot(x, centre, color=colour, lw=1)
        ax.axhline(0, color="#b0bec5", ls=":", lw=0.8)
        slope = (f": slope {c['slope']:.2f} [{c['slope_lo']:.2f}, {c['slope_hi']:.2f}]"
                 if c["slope"] == c["slope"] else "")  # the verdict with the one interval it reads
        if tone_of(c["verdict"]) == Verdict.INCONCLUSIVE:  # what these models could have found
            slope += f"\nthese models detect |slope| >= {c['detectable']:.2f} ({power:.0%} power)"
        ax.set_title(f"{c['representation']} / {c['backbone']} / {c['attribute']}\n{c['verdict']}{slope}",
                     fontsize=9, color=colour)
        ax.set_xlabel(f"{c['attribute']} encoding (probe AUROC on test)")
        ax.set_ylabel(f"gap in mean score of the sick ({pts['groups'][0]})")
    fig.suptitle("Shortcut testing: does the gap move with the attribute's encoding?\n(point labels: the gradient "
                 "factor of the attribute head)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_transfer(table: pl.DataFrame, path: Path) -> None:
    """A heatmap per backbone: train representation (rows) x test representation (columns), the mean AUROC over
    seeds in each cell (seeds are replicates), diverging at chance so a lost signal reads as white (a neutral
    purple-orange scale: the same AUROC is good on the diagonal and a shortcut off it)."""
    plt = pyplot()

    order = display_order(sorted(set(table["train"]) | set(table["test"])))  # a crop (seg_crop) too
    backbones = sorted(set(table["backbone"]))
    fig, axes = plt.subplots(1, len(backbones), figsize=(1.1 * len(order) * len(backbones) + 2.5,
                                                         1.0 * len(order) + 1.5), squeeze=False, sharey=True)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        part = table.filter(pl.col("backbone") == backbone).group_by("train", "test").agg(pl.col("auroc").mean())
        grid = np.full((len(order), len(order)), np.nan)
        for r in part.iter_rows(named=True):
            grid[order.index(r["train"]), order.index(r["test"])] = r["auroc"]
        im = ax.imshow(grid, cmap="PuOr_r", vmin=0.0, vmax=1.0)  # distance from chance, not good or bad
        for i in range(len(order)):
            for j in range(len(order)):
                if grid[i, j] == grid[i, j]:
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(grid[i, j] - 0.5) > 0.3 else "black")
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(order)), order, fontsize=8)
        ax.set(xlabel="tested on", title=backbone)
    axes[0][0].set_ylabel("trained on")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="test AUROC (0.5 = chance)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
