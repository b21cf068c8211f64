"""One visual language for the report and every figure: a colour per verdict, per backbone and per row label
(representation or pretraining path), and the protocol order of rows.

Colour encodes the verdict, never "high is good": a lungs-removed model at AUROC 1.000 is a red finding, not
a green success. Backbones and representations keep their colour across every figure of a run.
"""

from __future__ import annotations

import polars as pl

from cxrray.representations import REPRESENTATIONS, display_order
from cxrray.verdicts.verdict import Verdict

# verdict -> (strong colour for figures and marks, light background for table cells, mark, meaning): from the
# verdict vocabulary (``verdict.Verdict``), plus the lungs-visible reference rows of the tables
VISIBLE, NOT_JUDGED = "visible", "not_judged"  # the card's cells that carry no verdict of the rule
VERDICTS = {v.word: (v.colour, v.background, v.mark, v.meaning) for v in Verdict} | {
    VISIBLE: ("#37474f", "#ffffff", "", "lungs visible: a reference, not tested for a shortcut"),
    NOT_JUDGED: ("#757575", "#f5f5f5", "\u2013", "not judged: the shortcut step made no finding for this trial")}
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")
DARK = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4",
        "#b2df8a")


def backbone_colours(names: list[str]) -> dict[str, str]:
    """A colour per backbone, by its place among the run's backbones sorted by name (the tables' column order)."""
    return {n: TAB10[i % len(TAB10)] for i, n in enumerate(sorted(set(names)))}


def row_colours(names: list[str]) -> dict[str, str]:
    """A colour per row label: a registered representation keeps its registry colour in every run; other labels
    (pretraining paths, conditions) take the next colours in their display order."""
    known = display_order(list(REPRESENTATIONS.names()))
    out = {n: DARK[known.index(n) % len(DARK)] for n in names if n in known}
    others = [n for n in display_order(list(set(names))) if n not in out]
    return out | {n: DARK[(len(known) + i) % len(DARK)] for i, n in enumerate(others)}


def protocol_sorted(frame: pl.DataFrame, rows: str = "representation") -> pl.DataFrame:
    """Rows in protocol order: the row axis as its registry declares, then backbone, fold and seed."""
    if frame.is_empty() or rows not in frame.columns:
        return frame
    order = {r: i for i, r in enumerate(display_order([str(x) for x in frame[rows].unique().to_list()]))}
    rank = pl.col(rows).cast(pl.Utf8).replace_strict(order, default=len(order), return_dtype=pl.Int64)
    keys = ["_order", *[c for c in ("backbone", "fold", "seed") if c in frame.columns and c != rows]]
    return frame.with_columns(rank.alias("_order")).sort(keys, maintain_order=True).drop("_order")
