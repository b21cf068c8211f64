"""Calibration: does a predicted probability mean what it says?

Per analysed trial (test split, the task's positive class): the expected calibration error (ECE: 10 equal-width
bins of the positive-class probability, the gap between mean probability and observed frequency, weighted by
the bin's share) with a 95 % CI from a bootstrap over patients (images of one patient are not independent),
and a test of calibration by consistency resampling (Broecker and Smith 2007): labels drawn from the model's
own probabilities give the ECE a perfectly calibrated model would show on these scores, so a small test set
is not read as miscalibration (the ECE of a calibrated model is never 0). p-values are Holm-corrected over the
trials. A reliability diagram per trial. Step ``calibration``; table ``analysis/calibration.csv``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cxrray.analysis.compare import holm, trial_scores
from cxrray.analysis.palette import protocol_sorted
from cxrray.analysis.steps import Artifacts, LoadedRun, Section, analysis_step

BINS = 10
BOOT = 1000  # bootstrap and null resamples


def bin_stats(y: np.ndarray, p: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of ``p``: (count, mean probability, fraction positive); empty bins have NaN means."""
    k = np.clip((np.asarray(p) * bins).astype(int), 0, bins - 1)
    n = np.bincount(k, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(k, weights=p, minlength=bins) / n
        freq = np.bincount(k, weights=np.asarray(y, float), minlength=bins) / n
    return n, conf, freq


def ece(y: np.ndarray, p: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of positive-class probabilities ``p`` against outcomes ``y``."""
    n, conf, freq = bin_stats(y, p, bins)
    keep = n > 0
    return float((n[keep] * np.abs(conf[keep] - freq[keep])).sum() / n.sum())


def calibration_test(y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int = 0,
                     boot: int = BOOT) -> dict[str, float]:
    """ECE, its patient-bootstrap 95 % CI, and the consistency-resampling p-value (the share of ECEs of labels
    drawn from ``p`` itself that reach the observed one)."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(y, bool), np.clip(np.asarray(p, float), 0.0, 1.0)
    observed = ece(y, p)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    reps = []
    for _ in range(boot):
        take = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        reps.append(ece(y[take], p[take]))
    null = np.array([ece(rng.random(len(p)) < p, p) for _ in range(boot)])
    return {"n": int(len(y)), "ece": observed, "ece_lo": float(np.percentile(reps, 2.5)),
            "ece_hi": float(np.percentile(reps, 97.5)), "ece_if_calibrated": float(np.median(null)),
            "p": float((1 + (null >= observed - 1e-12).sum()) / (boot + 1))}


def calibration_table(predictions: pl.DataFrame, aurocs: pl.DataFrame, names: dict[str, str],
                      axis: str) -> pl.DataFrame:
    """One row per analysed single-label trial: ECE [CI], what a calibrated model would show, p, Holm p and a
    verdict (miscalibrated / consistent with calibration / degenerate: one score for every image)."""
    test = predictions.filter(pl.col("split") == "test")
    rows = []
    for trial in aurocs.filter(pl.col("positive").is_not_null()).iter_rows(named=True):
        _, y, p, patients = trial_scores(test, trial)
        if len(y) == 0:
            continue
        stats = calibration_test(y, p, patients, seed=len(rows))
        rows.append({"trial_id": trial["trial_id"], "run_name": names.get(trial["trial_id"], trial["trial_id"]),
                     axis: trial.get(axis, ""),
                     "positive": trial["positive"], **stats, "constant": bool(np.ptp(p) == 0)})
    if not rows:
        return pl.DataFrame()
    out = pl.DataFrame(rows)
    out = out.with_columns(pl.Series("p_holm", holm(out["p"].to_numpy())))
    return out.with_columns(
        pl.when(pl.col("constant")).then(pl.lit("degenerate (one score for every image)"))
        .when(pl.col("p_holm") < 0.05).then(pl.lit("miscalibrated"))
        .otherwise(pl.lit("consistent with calibration")).alias("verdict")).drop("constant")


def plot_reliability(predictions: pl.DataFrame, table: pl.DataFrame, aurocs: pl.DataFrame, path) -> None:
    """Small multiples: one reliability diagram per trial (observed frequency against mean probability per bin,
    the bin's size as the marker's area), the diagonal a calibrated model follows, ECE [CI] in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = predictions.filter(pl.col("split") == "test")
    trials = {t["trial_id"]: t for t in aurocs.iter_rows(named=True)}
    k = table.height
    cols = min(k, 4)
    fig, axes = plt.subplots(-(-k // cols), cols, figsize=(3.1 * cols, 3.1 * -(-k // cols)), squeeze=False)
    for ax, row in zip(axes.ravel(), table.iter_rows(named=True)):
        _, y, p, _ = trial_scores(test, trials[row["trial_id"]])
        n, conf, freq = bin_stats(y, p)
        keep = n > 0
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        ax.scatter(conf[keep], freq[keep], s=20 + 200 * n[keep] / n.sum(), color="#b2182b"
                   if row["verdict"] == "miscalibrated" else "#2166ac", alpha=0.8)
        ax.plot(conf[keep], freq[keep], color="0.3", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"mean P({row['positive']})", ylabel="observed frequency")
        ax.set_title(f"{row['run_name']}\nECE {row['ece']:.3f} [{row['ece_lo']:.3f}, {row['ece_hi']:.3f}]",
                     fontsize=8)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@analysis_step(order=35)
def calibration(run: LoadedRun) -> Artifacts:
    """Expected calibration error with a patient-bootstrap CI and a consistency-resampling test per trial."""
    a = Artifacts()
    if not run.aurocs.height or "positive" not in run.aurocs.columns:
        return a
    table = protocol_sorted(calibration_table(run.predictions, run.aurocs, run.names, run.rows), run.rows)
    if table.is_empty():  # (sorted: the figure's panels in the tables' order)
        return a
    a.tables["calibration"] = table
    plot_reliability(run.predictions, table, run.aurocs, run.figure("reliability"))
    a.figures["reliability"] = ("Reliability per trial: observed frequency of the positive class against the mean "
                                "predicted probability in 10 bins (marker area: the bin's share of images); the "
                                "dashed diagonal is perfect calibration; red: miscalibrated after Holm")
    bad = table.filter(pl.col("verdict") == "miscalibrated")
    a.text = (f"\n\nCalibration: {bad.height} of {table.height} trial(s) miscalibrated (consistency resampling, "
              f"Holm); ECE from {table['ece'].min():.3f} to {table['ece'].max():.3f} (analysis/calibration.csv).")
    a.sections = [Section("Calibration (does a probability mean what it says?)", tables=("calibration",),
                          figures=("reliability",), verdict="verdict", note=(
                              "ECE over 10 equal-width bins with a 95 % bootstrap CI over patients; 'ECE if "
                              "calibrated' is the median ECE of labels drawn from the model's own probabilities, "
                              "what a perfectly calibrated model shows on this many images; p: the share of those "
                              "reaching the observed ECE, Holm-corrected over the trials."))]
    return a
