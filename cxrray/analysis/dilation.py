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

import polars as pl

from cxrray.analysis.shortcut import cell_verdicts, findings_view, shortcut_findings
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.config import CELL_AXES
from cxrray.data.trial_rows import Predictions, combined
from cxrray.plots.palette import protocol_sorted
from cxrray.plots.steps import plot_dilation
from cxrray.report.page import Artifacts, Section
from cxrray.representations import lung_hiding
from cxrray.verdicts.verdict import Rules

REFERENCE = "original"


def dilation_verdicts(predictions: Predictions, aurocs: pl.DataFrame, grown: pl.DataFrame,
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


@analysis_step(order=32)
def dilation(run: LoadedRun) -> Artifacts:
    """Each lung-hiding cell's shortcut verdict at every mask dilation of the sweep, and whether it survives."""
    a = Artifacts()
    if run.dilated is None or run.dilated.aurocs.is_empty() or not run.aurocs.height:
        return a
    predictions = combined(run.predictions, run.dilated.predictions)
    table = dilation_verdicts(predictions, run.selected, run.dilated.aurocs, run.options.rules)
    if table.is_empty():
        return a
    a.tables["dilation"] = table
    plot_dilation(table, run.figure("dilation"), _who(table))
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
