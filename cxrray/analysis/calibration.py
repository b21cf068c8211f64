"""Calibration: does a predicted probability mean what it says?

Per analysed trial (test split, the task's positive class):

- the expected calibration error (ECE: 10 equal-width bins of the positive-class probability, the gap between
  mean probability and observed frequency, weighted by the bin's share), and what a calibrated model would show
  on these scores: the ECE of labels drawn from the model's own probabilities (consistency resampling, Broecker
  and Smith 2007), drawn *per patient* (one uniform per patient decides every image of that patient, so a
  patient's images share their label as they do in the data). The share of those reaching the observed ECE is
  the p-value of the calibration test, Holm-corrected over the trials. The ECE itself gets no interval: it is
  biased upwards and bounded at 0, and a bootstrap interval around it covered a calibrated model's true ECE of 0
  in 0-54 % of test sets;
- the calibration intercept (calibration-in-the-large: logit P(y) = a + logit p) and slope (logit P(y) = a + b
  logit p), logistic recalibration as TRIPOD+AI asks, with cluster-robust (patient) 95 % intervals: a calibrated
  model has intercept 0 and slope 1; a slope below 1 is overconfident.

A reliability diagram per trial. Step ``calibration``; table ``analysis/calibration.csv``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cxrray.analysis.aurocs import trial_scores
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.trial_rows import Predictions, by_trial
from cxrray.plots.figures import SEEDS_SHOWN, first_seeds
from cxrray.plots.palette import protocol_sorted
from cxrray.plots.steps import plot_reliability
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num
from cxrray.stats.calibration import bin_stats, calibration_test
from cxrray.stats.multiplicity import holm
from cxrray.verdicts.verdict import StepWord, Verdict


class Calibration(StepWord):
    """The calibration step's verdicts."""

    MISCALIBRATED = ("miscalibrated", Verdict.SHORTCUT)
    CONSISTENT = ("consistent with calibration", Verdict.NO_SHORTCUT)
    DEGENERATE = ("degenerate (one score for every image)", Verdict.DEGENERATE)


def calibration_table(predictions: Predictions, aurocs: pl.DataFrame, names: dict[str, str],
                      axis: str) -> pl.DataFrame:
    """One row per analysed single-label trial: ECE [CI], what a calibrated model would show, p, Holm p and a
    verdict (miscalibrated / consistent with calibration / degenerate: one score for every image)."""
    analysed = aurocs.filter(pl.col("positive").is_not_null())
    test = by_trial(predictions, analysed["trial_id"])
    rows: list[dict[str, object]] = []
    for trial in analysed.iter_rows(named=True):
        _, y, p, patients = trial_scores(test, trial)
        if len(y) == 0 or not np.isfinite(p).all():
            continue  # no scores to calibrate (a diverged model is named degenerate by the verdict step)
        stats = calibration_test(y, p, patients, seed=len(rows))
        rows.append({"trial_id": trial["trial_id"], "run_name": names.get(trial["trial_id"], trial["trial_id"]),
                     axis: trial.get(axis, ""), **({"backbone": trial["backbone"]} if "backbone" in trial else {}),
                     "positive": trial["positive"], **stats, "constant": bool(np.ptp(p) == 0)})
    if not rows:
        return pl.DataFrame()
    out = pl.DataFrame(rows)
    out = out.with_columns(pl.Series("p_holm", holm(out["p"].to_numpy())))
    return out.with_columns(
        pl.when(pl.col("constant")).then(pl.lit(Calibration.DEGENERATE.word))
        .when(pl.col("p_holm") < 0.05).then(pl.lit(Calibration.MISCALIBRATED.word))
        .otherwise(pl.lit(Calibration.CONSISTENT.word)).alias("verdict")).drop("constant")


def reliability_curves(predictions: Predictions, table: pl.DataFrame, aurocs: pl.DataFrame
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per trial of ``table``: mean probability and observed frequency of its non-empty bins (test split)."""
    test = by_trial(predictions, table["trial_id"])
    trials = {t["trial_id"]: t for t in aurocs.iter_rows(named=True)}
    out = {}
    for trial_id in table["trial_id"]:
        _, y, p, _ = trial_scores(test, trials[trial_id])
        n, conf, freq = bin_stats(y, p)
        out[trial_id] = (conf[n > 0], freq[n > 0])
    return out


@analysis_step(order=35)
def calibration(run: LoadedRun) -> Artifacts:
    """Expected calibration error with a per-patient consistency-resampling test, intercept and slope per trial."""
    a = Artifacts()
    if not run.aurocs.height or "positive" not in run.aurocs.columns:
        return a
    table = protocol_sorted(calibration_table(run.predictions, run.aurocs, run.names, run.rows), run.rows)
    if table.is_empty():  # (sorted: the figure's panels in the tables' order)
        return a
    a.tables["calibration"] = table
    shown, left = first_seeds(run.aurocs)  # 10,000 lines in a panel are a blur (and 110 MiB of matplotlib)
    drawn = table.filter(pl.col("trial_id").is_in(shown["trial_id"].implode()))
    plot_reliability(table.with_columns(miscalibrated=pl.col("verdict") == Calibration.MISCALIBRATED.word),
                     reliability_curves(run.predictions, drawn, run.aurocs), run.figure("reliability"), run.rows,
                     left)
    a.figures["reliability"] = ("Reliability per backbone: observed frequency of the positive class against the "
                                "mean predicted probability in 10 bins, a line per trial coloured by its "
                                f"{run.rows}; solid with markers: miscalibrated after Holm; dotted diagonal: "
                                "perfect calibration" + (f"; the first {SEEDS_SHOWN} seeds, {left:,} more in the "
                                                         "table" if left else ""))
    bad = table.filter(pl.col("verdict") == Calibration.MISCALIBRATED.word)
    low, high = num(table["ece"].min()), num(table["ece"].max())
    a.text = (f"\n\nCalibration: {bad.height} of {table.height} trial(s) miscalibrated (consistency resampling, "
              f"Holm); ECE from {low:.3f} to {high:.3f} (analysis/calibration.csv).")
    a.sections = [Section("Calibration (does a probability mean what it says?)", tables=("calibration",),
                          figures=("reliability",), verdict="verdict", note=(
                              "ECE over 10 equal-width bins; 'ECE if calibrated' is the median (and 95th "
                              "percentile) ECE of labels drawn from the model's own probabilities, one draw per "
                              "patient, what a perfectly calibrated model shows on these patients; p: the share of "
                              "those reaching the observed ECE, Holm-corrected over the trials. Intercept (0 when "
                              "calibrated in the large) and slope (1 when calibrated; < 1 overconfident) of a "
                              "logistic recalibration with patient-clustered 95 % CIs."))]
    return a
