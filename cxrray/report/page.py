"""What a step hands the report, and what the report reads of a run: typed records, so presentation reads
findings through fields (``Artifacts.answer``), never by a step's or a table's name.

``Artifacts``: what one step made (tables, figures, prose, report sections, and for the shortcut step the
study's ``Answer``); ``Section``: one part of the page; ``ReportRun``: the run as the report sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from cxrray.config import RunLayout
from cxrray.verdicts.verdict import Headline

# the report's parts after the verdict card, in this order
GROUPS = {"statistics": "Statistics", "bias": "Bias and shortcuts beyond the lungs", "saliency": "Saliency",
          "detail": "Per-trial detail", "reporting": "Reporting guidelines"}


@dataclass(frozen=True)
class Section:
    """One report section: the step's tables and figures (by name) in this order, and sub-tables shown
    only here (heading, frame); ``group``: the report part it belongs to (``GROUPS``); ``verdict``: a column
    of verdicts that colours the table's rows (colour encodes the verdict, never the size of a number)."""

    title: str
    tables: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    extra: tuple[tuple[str, pl.DataFrame], ...] = ()
    verdict: str | None = None
    note: str = ""
    group: str = "statistics"


@dataclass(frozen=True)
class Answer:
    """The study's answer: its headline, the verdicts it counts (one per protocol cell, in protocol order) and a
    sentence per verdict saying what it rests on."""

    headline: Headline
    findings: pl.DataFrame
    sentences: tuple[str, ...]


@dataclass
class Artifacts:
    """What one step made. ``tables`` -> ``analysis/<name>.csv``, the report and W&B; ``detail`` ->
    ``analysis/<name>.csv`` only (per-trial files such as ``confusion/<id>``); ``figures``: name -> caption
    of the PNGs the step wrote (``LoadedRun.figure``); ``text``: prose for the terminal and
    ``analysis/auroc_table.md``."""

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    detail: Mapping[str, pl.DataFrame] = field(default_factory=dict)  # a lazy mapping may make each on reading
    figures: dict[str, str] = field(default_factory=dict)
    text: str = ""
    sections: list[Section] = field(default_factory=list)
    answer: Answer | None = None  # the study's answer (the shortcut step's): the report's verdict card reads it


@dataclass(frozen=True)
class ReportRun:
    """The run as the report reads it: its folder, its trials, the analysed trials' AUROCs and their row axis."""

    layout: RunLayout
    results: pl.DataFrame  # per trial: spec fields, status, training metadata
    aurocs: pl.DataFrame  # per analysed trial: test AUROC with its interval and the row axis' label column
    rows: str  # the axis the study's tables have as rows

    def figure(self, name: str) -> Path:
        """Where figure ``name`` was written (``analysis/<name>.png``)."""
        return self.layout.analysis_file(f"{name}.png")

    def table_file(self, name: str) -> str:
        """Table ``name``'s CSV relative to the run folder (``analysis/<name>.csv``), as the report names it."""
        return str(self.layout.analysis_file(f"{name}.csv").relative_to(self.layout.root))


def answer_of(artifacts: Mapping[str, Artifacts]) -> Answer | None:
    """The study's answer among the steps' artifacts (the shortcut step's), read through its typed field."""
    return next((a.answer for a in artifacts.values() if a.answer is not None), None)
