"""Mask-dilation sensitivity: does each shortcut verdict survive when the lung mask grows?

Segmentation masks (a U-Net's, CheXmask's) tend to miss the lung edge, so a lung-hiding representation can still
show a rim of lung, and a model that reads the rim looks like one that needs no lungs (Sourget et al. 2024).
The sweep's ``--mask-dilation`` reruns the lung-hiding representations with the mask grown by each given number
of pixels (``TrialSpec.mask_dilation``); every other step analyses the undilated trials only.

Per dilation d (0 being the undilated trials the ``shortcut`` step judged), the lung-hiding trials of d are judged
by the very rule of the ``shortcut`` step (``shortcut_findings`` against their matched ``original`` trial, the
Bonferroni level over the trials of d; replicates combined per cell by ``cell_verdicts``), so the row at d = 0 is
the shortcut step's verdict, number for number. A cell's verdict **survives** when every dilation gives the
verdict of d = 0; otherwise the table names the first dilation where it changes. Step ``dilation``;
``analysis/dilation.csv``, figure ``dilation``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cxrray.analysis.palette import protocol_sorted
from cxrray.analysis.shortcut import cell_verdicts, findings_view, shortcut_findings
from cxrray.analysis.steps import Artifacts, LoadedRun, Section, analysis_step
from cxrray.analysis.verdict import Rules
from cxrray.config import CELL_AXES
from cxrray.representations import lung_hiding

REFERENCE = "original"


def dilation_verdicts(predictions: pl.DataFrame, aurocs: pl.DataFrame, grown: pl.DataFrame,
                      rules: Rules = Rules()) -> pl.DataFrame:
    """One row per lung-hiding cell and dilation: the cell's verdict with its numbers (``cell_verdicts``).
    ``aurocs``: the undilated trials (originals and d = 0); ``grown``: the dilated ones (``mask_dilation``);
    ``predictions``: both's."""
    originals = aurocs.filter(pl.col("representation") == REFERENCE)
    at = {0: aurocs.filter(pl.col("representation").is_in(lung_hiding()))}
    for d in sorted(set(grown["mask_dilation"].to_list())):
        at[int(d)] = grown.filter(pl.col("mask_dilation") == d).drop("mask_dilation")
    rows = []
    for d, hidden in at.items():
        if hidden.is_empty():
            continue
        both = pl.concat([originals, hidden.select(originals.columns)], how="vertical_relaxed")
        findings = shortcut_findings(predictions, both, rules)
        if findings.is_empty():
            continue
        rows.append(cell_verdicts(predictions, both, findings, rules).with_columns(
            pl.lit(d, pl.Int64).alias("mask_dilation")))
    if not rows:
        return pl.DataFrame()
    table = pl.concat(rows, how="diagonal_relaxed")
    axes = [c for c in CELL_AXES if c in table.columns]
    base = table.filter(pl.col("mask_dilation") == 0).select(*axes, pl.col("verdict").alias("verdict_at_0"))
    table = table.join(base, on=axes, how="left")
    changed = (table.filter(pl.col("verdict") != pl.col("verdict_at_0")).group_by(axes)
               .agg(pl.col("mask_dilation").min().alias("changes_at")))
    table = table.join(changed, on=axes, how="left").with_columns(
        pl.when(pl.col("verdict_at_0").is_null()).then(pl.lit("no undilated trial"))
        .when(pl.col("changes_at").is_null()).then(pl.lit("survives"))
        .otherwise(pl.format("changes at {} px", pl.col("changes_at"))).alias("survives"))
    table = protocol_sorted(table.sort([*axes, "mask_dilation"]), "representation")
    return table.select(*axes, "mask_dilation", "survives",
                                                       pl.exclude(*axes, "mask_dilation", "survives",
                                                                  "verdict_at_0", "changes_at"))


def _who(table: pl.DataFrame) -> list[str]:
    """The columns that name a cell to a reader: representation and backbone, and any other axis that varies."""
    return [c for c in ("representation", "backbone", "method", "task", "pretraining", "design")
            if c in table.columns and (c in ("representation", "backbone") or table[c].n_unique() > 1)]


def plot_dilation(table: pl.DataFrame, path: Path) -> None:
    """Per lung-hiding cell, its AUROC with the interval its verdict reads against the mask's dilation, each
    point coloured by its verdict; the chance line at 0.5 and the original's AUROC dashed."""
    from cxrray.analysis.figures import _plt
    from cxrray.analysis.palette import VERDICTS

    plt = _plt()
    axes = _who(table)
    cells = list(table.group_by(axes, maintain_order=True))
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


@analysis_step(order=32)
def dilation(run: LoadedRun) -> Artifacts:
    """Each lung-hiding cell's shortcut verdict at every mask dilation of the sweep, and whether it survives."""
    a = Artifacts()
    if run.dilated is None or run.dilated.aurocs.is_empty() or not run.aurocs.height:
        return a
    predictions = pl.concat([run.predictions, run.dilated.predictions], how="diagonal_relaxed")
    table = dilation_verdicts(predictions, run.selected, run.dilated.aurocs, run.options.rules)
    if table.is_empty():
        return a
    a.tables["dilation"] = table
    plot_dilation(table, run.figure("dilation"))
    a.figures["dilation"] = ("AUROC of each lung-hiding cell (its corrected interval, colour: verdict) as the lung "
                             "mask grows; dashed: the original's AUROC, dotted: chance")
    axes = _who(table)
    lines = []
    for key, cell in table.group_by(axes, maintain_order=True):
        cell = cell.sort("mask_dilation")
        steps = ", ".join(f"{r['mask_dilation']} px {r['verdict']} (AUROC {r['auroc']:.3f})"
                          for r in cell.iter_rows(named=True))
        lines.append(f"- {' / '.join(str(k) for k in key)}: {cell['survives'][0]}: {steps}")
    a.text = ("\n\nMask-dilation sensitivity (the lung mask grown before hiding; each dilation judged by the "
              "shortcut rule):\n" + "\n".join(lines))
    view = pl.concat([findings_view(table), table.select("mask_dilation", "survives")], how="horizontal")
    view = view.select("representation", "mask_dilation", "survives", pl.exclude("representation", "mask_dilation",
                                                                                "survives"))
    a.sections = [Section("Mask-dilation sensitivity", verdict="verdict", note=(
        "each lung-hiding cell rerun with its lung mask grown by the given pixels (masks tend to miss the lung "
        "edge); a verdict that changes as the mask grows rested on what the mask left visible"),
        extra=(("per cell and dilation (every column: analysis/dilation.csv)", view),), figures=("dilation",))]
    return a
