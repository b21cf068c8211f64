"""The loaded run: a run folder's results read once, its gathered predictions opened (read by trial as the steps
ask, never held whole; a damaged table named in one line), the mask-dilation axis' trials set apart, and per
protocol cell the setting best on validation selected; every step reads this ``LoadedRun``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

from cxrray.analysis.aurocs import row_axis, select_by_validation, trial_aurocs
from cxrray.analysis.steps import AnalysisOptions, Dilated, LoadedRun
from cxrray.config import RunLayout
from cxrray.data.trial_rows import StoredPredictions
from cxrray.registry import UserError

T = TypeVar("T")


def read_table(path: Path) -> pl.DataFrame:
    """A run's parquet table, or one line naming the file when it is damaged (truncated, not parquet)."""
    return readable(path, pl.read_parquet)


def readable(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)`` (a table, or ``StoredPredictions.open``: where each trial's rows lie), or one line naming the
    file when it is damaged (truncated, not parquet)."""
    try:
        return read(path)
    except Exception as exc:  # noqa: BLE001  (polars and arrow raise several kinds for a damaged file)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable ({why[:200]}); rerun the sweep's command to gather it again from "
                        f"the trial folders (finished trials are kept)") from None


def load_run(run_dir: str | Path, options: AnalysisOptions = AnalysisOptions()) -> LoadedRun:
    """Read a run's gathered predictions and results; choose per protocol cell the setting best on validation."""
    layout = RunLayout(Path(run_dir))
    if not layout.predictions.exists() or not layout.results.exists():
        raise UserError(f"{layout.root}: no predictions.parquet/results.parquet (has a trial finished?)")
    predictions, results = readable(layout.predictions, StoredPredictions.open), read_table(layout.results)
    predictions, results, dilated = split_dilated(predictions, results)
    every = trial_aurocs(predictions, results)
    selected = select_by_validation(every)
    rows, labelled = row_axis(selected)
    return LoadedRun(layout, predictions, results, selected, labelled, rows, every.height, options, dilated)


def split_dilated(predictions: StoredPredictions, results: pl.DataFrame) -> tuple[StoredPredictions, pl.DataFrame,
                                                                                 Dilated | None]:
    """The undilated trials (every step's), and the mask-dilation axis' trials apart (step ``dilation``'s); the
    ``mask_dilation`` column leaves the undilated results, so their tables are those of a run without the axis."""
    if "mask_dilation" not in results.columns:
        return predictions, results, None
    grown = pl.col("mask_dilation").fill_null(0) > 0
    ids = set(results.filter(grown)["trial_id"].to_list())
    dilated = None
    if ids:
        d_results = results.filter(grown)
        d_predictions = predictions.only(ids)
        aurocs = select_by_validation(trial_aurocs(d_predictions, d_results))
        dilated = Dilated(d_predictions, d_results, aurocs)
    kept = predictions.only(t for t in predictions.trials if t not in ids)
    return kept, results.filter(~grown).drop("mask_dilation"), dilated
