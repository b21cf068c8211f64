"""Run every registered analysis step on a run directory's stored predictions; write tables, text, report.

``analyze`` is the whole analysis: load the run once (``LoadedRun``), run the steps of ``ANALYSES`` in order,
write each step's tables under ``analysis/`` (the folder is rewritten from what exists now, so a re-analysis
with fewer steps leaves nothing stale; it is written as ``analysis.partial/`` and swapped in whole, so an
interrupted re-analysis leaves the previous one in place), the prose to ``analysis/auroc_table.md`` and the
report. Nothing here retrains; the training loop and Ray Tune are never imported.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

# Importing a step's module registers it: a new analysis is one module plus its line here.
import cxrray.analysis.transfer  # noqa: F401  (binds no name that a parameter would shadow)
from cxrray.analysis import (  # noqa: F401
    bias,
    calibration,
    checklist,
    compare,
    dilation,
    metrics,
    saliency_report,
    short_testing,
    shortcut,
    source_ceiling,
    subgroups,  # (the steps register themselves)
    tables,
    underdiagnosis,
)
from cxrray.analysis.fanout import Placement
from cxrray.analysis.report import write_report
from cxrray.analysis.steps import ANALYSES, AnalysisOptions, Artifacts, Dilated, LoadedRun, ordered_steps
from cxrray.analysis.verdict import Rules
from cxrray.config import RunLayout
from cxrray.registry import UserError

FAMILY = AnalysisOptions().family


@dataclass(frozen=True)
class StepFailure:
    """A step that raised: its name, the error in one line, and the file that keeps its traceback."""

    step: str
    error: str
    log: Path

    def line(self) -> str:
        return f"step {self.step} failed: {self.error} (traceback: {self.log})"


@dataclass(frozen=True)
class AnalysisResult:
    text: str  # what the terminal shows (also analysis/auroc_table.md)
    artifacts: dict[str, Artifacts]  # per step name, in step order
    report: Path
    failed: tuple[StepFailure, ...] = ()  # steps that raised; every other step's tables and the report stand

    def failure_lines(self) -> list[str]:
        """One console line per failed step (empty when every step ran)."""
        return [f"[cxrray] {f.line()}; the other steps' tables and the report were written" for f in self.failed]


def read_table(path: Path) -> pl.DataFrame:
    """A run's parquet table, or one line naming the file when it is damaged (truncated, not parquet)."""
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001  (polars and arrow raise several kinds for a damaged file)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable ({why[:200]}); rerun the sweep's command to gather it again from "
                        f"the trial folders (finished trials are kept)") from None


def load_run(run_dir: str | Path, options: AnalysisOptions = AnalysisOptions()) -> LoadedRun:
    """Read a run's gathered predictions and results; choose per protocol cell the setting best on validation."""
    layout = RunLayout(Path(run_dir))
    if not layout.predictions.exists() or not layout.results.exists():
        raise UserError(f"{layout.root}: no predictions.parquet/results.parquet (has a trial finished?)")
    predictions, results = read_table(layout.predictions), read_table(layout.results)
    predictions, results, dilated = split_dilated(predictions, results)
    every = tables.trial_aurocs(predictions, results)
    selected = tables.select_by_validation(every)
    rows, labelled = tables.row_axis(selected)
    return LoadedRun(layout, predictions, results, selected, labelled, rows, every.height, options, dilated)


def split_dilated(predictions: pl.DataFrame, results: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame,
                                                                           Dilated | None]:
    """The undilated trials (every step's), and the mask-dilation axis' trials apart (step ``dilation``'s); the
    ``mask_dilation`` column leaves the undilated results, so their tables are those of a run without the axis."""
    if "mask_dilation" not in results.columns:
        return predictions, results, None
    grown = pl.col("mask_dilation").fill_null(0) > 0
    ids = results.filter(grown)["trial_id"].implode()
    dilated = None
    if results.filter(grown).height:
        d_results = results.filter(grown)
        d_predictions = predictions.filter(pl.col("trial_id").is_in(ids))
        aurocs = tables.select_by_validation(tables.trial_aurocs(d_predictions, d_results))
        dilated = Dilated(d_predictions, d_results, aurocs)
    return predictions.filter(~pl.col("trial_id").is_in(ids)), results.filter(~grown).drop("mask_dilation"), dilated


def run_analysis(run_dir: str | Path, options: AnalysisOptions = AnalysisOptions()) -> AnalysisResult:
    """Every registered step on ``run_dir``; tables under ``analysis/``, the text, and ``report.html``."""
    final = load_run(run_dir, options)
    run = dataclasses.replace(final, layout=final.layout.staging())  # written aside, swapped in when complete
    out = run.layout.analysis
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    artifacts, failed = {}, []
    steps = ordered_steps()
    chosen = [s for s in steps if s.name not in options.skip]
    heard: dict[tuple[str, str], int] = {}  # (step, a library's warning) -> how often: said once, counted
    for step in chosen:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                made = step.run(run)
            for w in caught:
                key = (step.name, f"{w.category.__name__}: {' '.join(str(w.message).split())[:200]}")
                heard[key] = heard.get(key, 0) + 1
            for name, frame in (made.tables | made.detail).items():
                path = run.layout.analysis_file(f"{name}.csv")
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.write_csv(path)
        except Exception as exc:  # noqa: BLE001  (one step's failure never takes the others or the report down)
            log = f"failed/{step.name}.txt"  # kept in the staged folder, read from the final one
            failed.append(_failure(step.name, exc, run.layout.analysis_file(log), final.layout.analysis_file(log)))
            continue
        artifacts[step.name] = made
    skipped = [s.name for s in steps if s.name in options.skip]
    text = "".join(a.text for a in artifacts.values()) + (
        f"\n\nAnalysis steps: ran {', '.join(s.name for s in chosen)}; skipped {', '.join(skipped)} (--analysis / "
        f"--skip)" if skipped else "") + "".join(f"\n\nFAILED: {f.line()}" for f in failed)
    if heard:  # scikit-learn's per-trial warnings printed five times a run; each step's own check says why
        run.layout.analysis_file("warnings.txt").write_text("".join(
            f"step {step}: {message} ({n}x)\n" for (step, message), n in heard.items()))
        text += (f"\n\nLibrary warnings: {sum(heard.values())} during the analysis, {len(heard)} distinct "
                 f"(analysis/warnings.txt)")
    run.layout.analysis_file("auroc_table.md").write_text(text + "\n")
    run = dataclasses.replace(final, layout=run.layout.swap_analysis())
    report = write_report(run, text, artifacts, [(f.step, f.error, str(f.log)) for f in failed])
    return AnalysisResult(text, artifacts, report, tuple(failed))


def _failure(step: str, exc: Exception, staged: Path, log: Path) -> StepFailure:
    """The failure of ``step``: its traceback written to ``staged`` (``log`` once the analysis is swapped in),
    the error in one line."""
    import traceback

    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text("".join(traceback.format_exception(exc)))
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return StepFailure(step, f"{type(exc).__name__}: {first}" if first else type(exc).__name__, log)


def analysis_options(analysis: str = "all", skip: tuple[str, ...] = (), **options: Any) -> AnalysisOptions:
    """The analysis a user chose: ``analysis`` "all" (every registered step) or "statistics" (no step that loads
    the saved models: saliency, transfer; minutes instead of hours at paper scale), less the steps named in
    ``skip``; every name checked against the registry (its error lists the valid ones), before Ray starts."""
    for name in skip:
        ANALYSES.get(name)
    if analysis not in ("all", "statistics"):
        raise UserError(f"--analysis {analysis!r}: valid: all, statistics")
    models = tuple(s.name for s in ordered_steps() if s.models) if analysis == "statistics" else ()
    return AnalysisOptions(skip=tuple(sorted({*skip, *models})), **options)


def analyze(run_dir: str | Path, saliency: int = 32, family: tuple[str, ...] = FAMILY, lime: int = 0,
            transfer: bool = True, rules: Rules = Rules(), analysis: str = "all", skip: tuple[str, ...] = (),
            placement: Placement = Placement(), transfer_patients: int = 1000, model_seeds: int = 1) -> str:
    """Recompute every table from ``run_dir``'s stored predictions; returns the text and the report's path (and
    a line per failed step: ``analyze_run`` gives them as records).

    ``saliency``: test images per trial for Grad-CAM from the saved models (0 skips it).
    ``family``: the columns whose equal values make one family of DeLong tests (adjusted together).
    ``lime``: of those, images per trial also explained with LIME (0 skips it; slower than Grad-CAM).
    ``transfer``: score each saved model on every representation (the transfer matrix).
    ``rules``: the verdict's alpha and equivalence margins. ``analysis`` / ``skip``: see ``analysis_options``.
    ``placement``: where saliency and transfer run (``fanout``); ``transfer_patients``: the transfer matrix's sample
    of test patients (0: all); ``model_seeds``: the seeds whose models the model-based steps load (0: all).
    """
    result = run_analysis(run_dir, analysis_options(analysis, skip, saliency=saliency, lime=lime,
                                                    family=tuple(family), transfer=transfer, rules=rules,
                                                    placement=placement, transfer_patients=transfer_patients,
                                                    model_seeds=model_seeds))
    return "\n".join([result.text + f"\n\nReport: {result.report}", *result.failure_lines()])
