"""``RUN_DIR/report.html``: a reviewer's document in one self-contained page (figures as data URIs).

It opens with a verdict card per study (the answer in one line, a sentence per lung-hiding trial, the protocol
axis x backbone table in protocol order with AUROC [CI] and a verdict mark, the forest plot, every class code
defined), then the analysis steps' sections grouped into statistics, bias, saliency and per-trial detail, and
the provenance (the effective study, each invocation, versions, data fingerprints). Colour encodes the
verdict. Tables drop the columns that are constant (named once above the table); large ones fold away. A print
stylesheet keeps every AUROC and CI column on the page. Rendered with jinja2 from ``templates/report.html.j2``,
only from the analysis artifacts and the run's stored files: it reruns anywhere, and a re-analysis rewrites
every section from what exists now.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from cxrray import provenance
from cxrray.data.tasks import TASKS, class_legend
from cxrray.plots.palette import NOT_JUDGED, VERDICTS, VISIBLE, protocol_sorted
from cxrray.report.page import GROUPS, Artifacts, ReportRun, Section, answer_of
from cxrray.representations import lung_hiding
from cxrray.verdicts.verdict import Verdict, tone_of, verdict_line

LABELS = {"auroc": "AUROC", "ci_lo": "CI low", "ci_hi": "CI high", "n_pos": "positives", "n_neg": "negatives",
          "trial_id": "trial id", "run_name": "trial", "ece": "ECE", "ece_lo": "ECE CI low",
          "ece_hi": "ECE CI high", "ece_if_calibrated": "ECE if calibrated", "best_val_auroc": "best val AUROC",
          "auroc_macro": "macro AUROC", "auroc_rest": "AUROC rest", "n": "images",
          "ci_lo_corrected": "corrected CI low", "ci_hi_corrected": "corrected CI high", "p_holm": "p (Holm)",
          "p_bonferroni": "p (Bonferroni)", "auroc_original": "AUROC original", "p_vs_original": "p vs original",
          "auroc_mean": "mean AUROC", "t_lo": "t-CI low", "t_hi": "t-CI high", "auroc_a": "AUROC a",
          "auroc_b": "AUROC b", "val_auroc": "val AUROC", "test_auroc": "test AUROC",
          "detectable": "detectable |slope| (80 % power)"}
FOLD_ROWS, FOLD_COLS = 15, 12  # a table larger than this folds away (<details>), closed on screen, open in print
REPORT_ROWS = 500  # a longer table shows its first rows and names the file with all (a 10,000-trial run: 60 MB)
CARD_LISTED = 10  # the card lists this many replicates per grid cell and names this many trials per list
SHORT_CELL = 14  # a column whose every cell is at most this long keeps each cell on one line in print
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("cxrray.report", "templates"),
                               autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                               lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def label(column: str) -> str:
    """A column name as a reader reads it: ``ci_lo`` -> "CI low", ``lung_share_pred`` -> "lung share pred"."""
    return LABELS.get(column, column.replace("_", " ").replace(".", " "))


def fmt(value: object) -> str:
    """A cell: 3 decimals for floats, a dash for NaN and missing values (never "nan" or "None")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


@dataclass
class Table:
    """A frame ready to render: headers, formatted cells, per-row CSS class, the constant columns in words."""

    headers: list[str]
    rows: list[list[str]]
    row_class: list[str] = field(default_factory=list)
    constant: str = ""
    folded: bool = False
    caption: str = ""
    short: list[bool] = field(default_factory=list)  # per column: every cell short, kept on one line in print
    total: int = 0  # the table's rows (more than ``rows`` when only the first ``REPORT_ROWS`` are shown)
    source: str = ""  # the file that holds every row


def table(frame: pl.DataFrame, rows: str = "representation", verdict: str | None = None, caption: str = "",
          keep: tuple[str, ...] = (), source: str = "") -> Table | None:
    """Protocol order, constant columns dropped (and named), readable headers, NaN as a dash; ``verdict``: a
    column whose values colour the rows; the first ``REPORT_ROWS`` rows (``source``: the file with all of them).
    None for an empty frame."""
    if frame.is_empty():
        return None
    total = frame.height
    constant = [c for c in frame.columns if total > 1 and c not in keep and c != verdict
                and frame[c].dtype != pl.List and frame[c].n_unique() == 1]  # over every row, not those shown
    frame = protocol_sorted(frame, rows).head(REPORT_ROWS)
    shown = frame.drop(constant) if len(constant) < frame.width else frame
    tones = [getattr(tone_of(str(v)), "word", v) for v in frame[verdict]] if verdict in frame.columns else []
    classes = [f"v-{v}" if v in VERDICTS else "" for v in tones]
    said = "; ".join(f"{label(c)} = {fmt(frame[c][0])}" for c in constant if fmt(frame[c][0]) not in ("", "\u2014"))
    cells = [[fmt(v) for v in r] for r in shown.iter_rows()]
    short = [max((len(x) for x in (label(shown.columns[k]), *(r[k] for r in cells))), default=0) <= SHORT_CELL
             for k in range(shown.width)]
    return Table([label(c) for c in shown.columns], cells, classes, f"The same in every row: {said}." if said else "",
                 shown.height > FOLD_ROWS or shown.width > FOLD_COLS, caption, short, total, source)


def image(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.exists() else ""


def _verdict_of(findings: pl.DataFrame) -> tuple[dict[tuple[Any, ...], str], list[str]]:
    keys: list[str] = [c for c in ("representation", "backbone", "seed", "fold") if c in findings.columns]
    return {tuple(r[c] for c in keys): r["verdict"] for r in findings.iter_rows(named=True)}, keys


def verdict_grid(run: ReportRun, findings: pl.DataFrame) -> dict:
    """The card's table: row axis (protocol order) x backbone; per cell each replicate's AUROC [95 % CI] and
    its verdict mark and colour (lung-hiding trials: their verdict; any degenerate model: degenerate)."""
    aurocs = protocol_sorted(run.aurocs, run.rows)
    backbones = sorted(set(aurocs["backbone"]))
    verdicts, keys = _verdict_of(findings) if not findings.is_empty() else ({}, [])
    hidden = set(lung_hiding())
    grid = []
    for label_ in dict.fromkeys(aurocs[run.rows].to_list()):
        cells = []
        for bb in backbones:
            part = aurocs.filter((pl.col(run.rows) == label_) & (pl.col("backbone") == bb))
            entries = []
            for r in part.head(CARD_LISTED).iter_rows(named=True):
                v = verdicts.get(tuple(r[c] for c in keys)) if keys else None
                v = Verdict.DEGENERATE if r.get("degenerate") else v or (  # the rule's word, never one made up here
                    VISIBLE if r.get("representation") not in hidden else NOT_JUDGED)
                ci = f"{fmt(r['auroc'])} [{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}]"
                seed = f"seed {r['seed']}: " if part.height > 1 and "seed" in r else ""
                entries.append({"text": seed + ci, "verdict": v, "mark": VERDICTS[v][2]})
            if part.height > CARD_LISTED:
                entries.append({"text": f"and {part.height - CARD_LISTED:,} more ({run.table_file('trial_aurocs')})",
                                "verdict": "", "mark": ""})
            cells.append(entries)
        grid.append({"label": label_, "cells": cells})
    return {"axis": label(run.rows), "backbones": backbones, "rows": grid}


def card(run: ReportRun, artifacts: dict[str, Artifacts]) -> dict:
    """The verdict card: the one-line answer, a sentence per lung-hiding trial, the table, the key figure and
    the class codes."""
    given = answer_of(artifacts)
    findings = given.findings if given is not None else pl.DataFrame()
    answer = given.headline if given is not None else verdict_line([])
    sentences = [{"verdict": v, "text": s} for v, s in zip(findings["verdict"], given.sentences, strict=True)] \
        if given is not None and not findings.is_empty() else []
    degenerate = run.aurocs.filter(pl.col("degenerate") != "") if run.aurocs.height else run.aurocs
    names = dict(zip(run.results["trial_id"], run.results["run_name"], strict=True))
    failed = run.results.filter(pl.col("status") != "finished")
    tasks = sorted(set(run.aurocs["task"])) if "task" in run.aurocs.columns and run.aurocs.height else []
    legend = [(t, class_legend(TASKS.get(t))) for t in tasks if t in TASKS]
    figure = next((a.figures for a in artifacts.values() if "auroc_forest" in a.figures), {})
    return {"line": answer.text, "css": answer.tone.word,
            "sentences": sentences, "grid": verdict_grid(run, findings) if run.aurocs.height else None,
            "degenerate": listed([f"{names.get(r['trial_id'], r['trial_id'])}: {r['degenerate']}"
                                  for r in degenerate.head(CARD_LISTED + 1).iter_rows(named=True)],
                                 degenerate.height, run.table_file("trial_aurocs")),
            "forest": {"src": image(run.figure("auroc_forest")), "caption": figure.get("auroc_forest", "")},
            "legend": legend, "failed": listed(failed["run_name"].head(CARD_LISTED + 1).to_list(), failed.height,
                                               run.layout.results.name)}


def listed(items: list[str], total: int, source: str) -> list[str]:
    """The first ``CARD_LISTED`` of ``total`` items, then how many more and where they all are."""
    return items if total <= CARD_LISTED else [*items[:CARD_LISTED], f"and {total - CARD_LISTED:,} more ({source})"]


def section(sec: Section, art: Artifacts, run: ReportRun) -> dict | None:
    """A section's tables and figures as the template shows them; None when the step made none of them (a
    section never stands empty, and a re-analysis without a step's output shows nothing stale)."""
    tables = [table(art.tables[t], run.rows, sec.verdict, source=run.table_file(t)) for t in sec.tables
              if t in art.tables]
    tables += [table(frame, run.rows, sec.verdict, caption=heading, keep=("cell",)) for heading, frame in sec.extra]
    figures = [{"src": image(run.figure(f)), "caption": art.figures[f]} for f in sec.figures if f in art.figures]
    tables = [t for t in tables if t is not None]
    if not tables and not figures:
        return None
    return {"title": sec.title, "tables": tables, "figures": figures, "note": sec.note}


def provenance_view(run: ReportRun) -> dict:
    """The effective study, the invocations that made the run, versions and the datasets' fingerprints."""
    invocations, study = provenance.read(run.layout)
    data_cols = [c for c in ("data_id", "task", "design", "fold", "image_size") if c in run.results.columns]
    data = run.results.select(data_cols).unique(maintain_order=True) if data_cols else pl.DataFrame()
    last = invocations[-1] if invocations else {}
    trials = run.results.select([c for c in ("run_name", "trial_id", "status", "init") if c in run.results.columns])
    return {"study": study, "invocations": invocations,
            "packages": last.get("packages") or provenance.package_versions(),
            "data": table(data, keep=("data_id",),
                          caption="Datasets (data_id: the fingerprint of the manifest rows and their split)"),
            "runs": table(trials, keep=("trial_id",), source=run.layout.results.name,
                            caption="Trials (full specs: results.parquet and trials/<id>/trial.json)"),
            "root": str(run.layout.root)}


def write_report(run: ReportRun, summary_text: str, named: dict[str, Artifacts],
                 failed: list[tuple[str, str, str]] | None = None) -> Path:
    """Write ``report.html`` from the analysis artifacts (per step name, in step order): verdict card, grouped
    sections, the findings in words, provenance; ``failed``: (step, error, traceback file) of each step that
    raised, marked at the top (its section is missing, every other one stands)."""
    groups: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for art in named.values():
        for sec in art.sections:
            shown = section(sec, art, run)
            if shown is not None:
                groups.setdefault(sec.group, []).append(shown)
    study = ", ".join(sorted(set(run.results["study"]))) if "study" in run.results.columns else ""
    page = TEMPLATES.get_template("report.html.j2").render(
        study=study, card=card(run, named), groups=[(GROUPS.get(g, g), s) for g, s in groups.items() if s],
        text=summary_text, prov=provenance_view(run), verdicts=VERDICTS, n_trials=run.results.height,
        failed_steps=failed or [],
        made=time.strftime("%Y-%m-%d %H:%M %Z"))
    run.layout.report.write_text(page)
    return run.layout.report
