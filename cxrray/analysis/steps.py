"""Analysis as registered steps over a loaded run.

A step is a function ``(LoadedRun) -> Artifacts`` registered with ``@analysis_step(order)``: it reads the
stored predictions and results (never the training loop, never Tune), and returns its tables, figures, prose
and report sections. ``run.analyze`` runs the steps in order and writes every table as
``analysis/<name>.csv``; the report and the W&B summary iterate the artifacts, so a file name is written in
one place: the step that makes it. A new analysis is one function with its decorator, in its own module,
imported by ``cxrray/analysis/analyze.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import polars as pl

from cxrray.config import RunLayout, TrialSpec
from cxrray.data.trial_rows import Predictions
from cxrray.declared import check_ranges, option
from cxrray.explain.fanout import Placement
from cxrray.registry import Registry, UserError
from cxrray.report.page import Artifacts, ReportRun  # (what a step hands the report)
from cxrray.verdicts.verdict import Rules

FAMILY_COLUMNS = tuple(f.name for f in fields(TrialSpec) if f.name not in ("recipe", "data_id"))  # --family


@dataclass(frozen=True)
class AnalysisOptions:
    """What a user can choose about an analysis run."""

    saliency: int = option(32, "test images per trial for Grad-CAM (0: skip)", lo=0, hi=100_000, unit="images")
    lime: int = option(0, "of those, images per trial also explained with LIME (COVID-CXNet's second method; "
                       "about 0.5 s per image at 64 px on a CPU)", lo=0, hi=100_000, unit="images")
    family: tuple[str, ...] = option(("study", "task", "seed", "fold"), "columns that define one family of DeLong "
                                     "tests, adjusted together (Bonferroni, Holm); e.g. --family study compares "
                                     "every pair of trials of the study")
    transfer: bool = option(True, "skip the transfer matrix (each saved model scored on every representation of "
                            "its test images)", flag="--no-transfer")
    transfer_patients: int = option(1000, "score the transfer matrix on a random sample of this many test "
                                    "patients when a split has more (the same for every model; about 24 CPU-hours "
                                    "at paper scale instead of hundreds; 0: every patient)", lo=0, hi=100_000_000,
                                    unit="patients")
    model_seeds: int = option(1, "saliency and the transfer matrix explain the models of the run's first N seeds "
                              "(seeds are a cell's replicates; 0: every seed)", lo=0, hi=100_000, unit="seeds")
    rules: Rules = field(default_factory=Rules)  # the verdict's alpha and equivalence margins (declared there)
    skip: tuple[str, ...] = option((), "registered analysis steps not to run (e.g. transfer saliency); the report "
                                   "says which ran", metavar="STEP")
    placement: Placement = field(default_factory=Placement)  # where saliency and transfer run (declared there)

    def __post_init__(self) -> None:
        """Every choice in range, every family column a trial's field, before any step runs: a dropped unknown
        column would pool the seeds into one family, and ``saliency -5`` would say it ran."""
        check_ranges(self)
        unknown = [c for c in self.family if c not in FAMILY_COLUMNS]
        if unknown or not self.family:
            near = difflib.get_close_matches(unknown[0], FAMILY_COLUMNS, n=1) if unknown else []
            what = (f"unknown column {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                    if unknown else "no column")
            raise UserError(f"--family {' '.join(self.family)}: {what}; valid: {', '.join(FAMILY_COLUMNS)}")
        object.__setattr__(self, "family", tuple(dict.fromkeys(self.family)))  # a column named twice is one


@dataclass(frozen=True)
class Dilated:
    """The trials of the mask-dilation axis (``TrialSpec.mask_dilation`` > 0): lung-hiding representations rerun
    with grown masks. Every other step analyses the undilated trials only; step ``dilation`` reads these against
    them."""

    predictions: Predictions  # their per-image predictions (the stored table's view of their trials)
    results: pl.DataFrame  # their results rows
    aurocs: pl.DataFrame  # per trial (setting chosen on validation): test AUROC, interval, ``mask_dilation``


@dataclass(frozen=True)
class LoadedRun:
    """A run directory's stored outputs, loaded once for every step."""

    layout: RunLayout
    predictions: Predictions  # per image, per trial, per split: the stored table, read by trial (never held)
    results: pl.DataFrame  # per trial: spec fields, status, training metadata
    selected: pl.DataFrame  # per analysed trial: test AUROC with its interval (the setting chosen on validation)
    aurocs: pl.DataFrame  # ``selected`` with the row axis' label column (``condition`` when several axes vary)
    rows: str  # the axis the study's tables have as rows
    n_trials: int  # analysed trials before the choice among hyper-parameter settings
    options: AnalysisOptions
    dilated: Dilated | None = None  # the mask-dilation axis' trials (mask grown before hiding), kept apart


    @property
    def names(self) -> dict[str, str]:
        """trial id -> run name (``original.resnet18.none.s0``), for tables a person reads."""
        if "run_name" not in self.results.columns:
            return {}
        return dict(zip(self.results["trial_id"], self.results["run_name"], strict=True))

    def figure(self, name: str) -> Path:
        """Where a step writes figure ``name`` (``analysis/<name>.png``)."""
        return self.layout.analysis_file(f"{name}.png")

    def view(self) -> ReportRun:
        """What the report reads of the run."""
        return ReportRun(self.layout, self.results, self.aurocs, self.rows)

    def model_trials(self) -> pl.DataFrame:
        """The analysed trials whose saved models the model-based steps (saliency, transfer) load: those of the
        run's first ``options.model_seeds`` seeds (0: every seed). At paper scale the seeds are replicates of a
        cell, and one seed's models explain the cell at a fifth of the cost."""
        n = self.options.model_seeds
        if not n or "seed" not in self.aurocs.columns:
            return self.aurocs
        return self.aurocs.filter(pl.col("seed").is_in(sorted(set(self.aurocs["seed"].to_list()))[:n]))

    def model_seeds_note(self) -> str:
        """How many of the run's seeds the model-based steps explained, in words ("" when all of them)."""
        seeds = sorted(set(self.aurocs["seed"].to_list())) if "seed" in self.aurocs.columns else []
        shown = sorted(set(self.model_trials()["seed"].to_list())) if seeds else []
        return "" if shown == seeds else (f"; the models of seed{'s' * (len(shown) > 1)} {', '.join(map(str, shown))} "
                                          f"(of {len(seeds)} seeds)")


@dataclass(frozen=True)
class AnalysisStep:
    name: str
    order: int
    run: Callable[[LoadedRun], Artifacts]
    description: str = ""
    models: bool = False  # reads the saved models (saliency, transfer): the costly part, left out by
    # ``--analysis statistics``


ANALYSES: Registry[AnalysisStep] = Registry("analysis step")


def analysis_step(order: int, models: bool = False) -> Callable[[Callable[[LoadedRun], Artifacts]],
                                                                Callable[[LoadedRun], Artifacts]]:
    """Register a step under its function's name; ``order`` places its text and report sections; ``models``:
    the step loads the trials' saved models."""

    def deco(fn: Callable[[LoadedRun], Artifacts]) -> Callable[[LoadedRun], Artifacts]:
        ANALYSES.register(fn.__name__)(AnalysisStep(fn.__name__, order, fn, (fn.__doc__ or "").strip(), models))
        return fn

    return deco


def ordered_steps() -> list[AnalysisStep]:
    return sorted((ANALYSES.get(n) for n in ANALYSES.names()), key=lambda s: (s.order, s.name))


def analysis_options(analysis: str = "all", options: AnalysisOptions = AnalysisOptions()) -> AnalysisOptions:
    """The analysis a user chose: ``analysis`` "all" (every registered step) or "statistics" (no step that loads
    the saved models: saliency, transfer; minutes instead of hours at paper scale), less the steps ``options``
    skips; every name checked against the registry (its error lists the valid ones), before Ray starts."""
    for name in options.skip:
        ANALYSES.get(name)
    if analysis not in ("all", "statistics"):
        raise UserError(f"--analysis {analysis!r}: valid: all, statistics")
    models = tuple(s.name for s in ordered_steps() if s.models) if analysis == "statistics" else ()
    return replace(options, skip=tuple(sorted({*options.skip, *models})))
