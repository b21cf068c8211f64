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
from scipy import stats

from cxrray.analysis.palette import protocol_sorted, row_colours
from cxrray.analysis.steps import Artifacts, LoadedRun, Section, analysis_step
from cxrray.analysis.tables import trial_scores
from cxrray.analysis.verdict import StepWord, Verdict
from cxrray.stats.multiplicity import holm

BINS = 10
BOOT = 1000  # bootstrap and null resamples


class Calibration(StepWord):
    """The calibration step's verdicts."""

    MISCALIBRATED = ("miscalibrated", Verdict.SHORTCUT)
    CONSISTENT = ("consistent with calibration", Verdict.NO_SHORTCUT)
    DEGENERATE = ("degenerate (one score for every image)", Verdict.DEGENERATE)


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


def null_eces(p: np.ndarray, patients: np.ndarray, rng: np.random.Generator, draws: int = BOOT,
              bins: int = BINS) -> np.ndarray:
    """ECEs of ``draws`` label sets drawn from the probabilities themselves, one uniform per patient (vectorised:
    the bins depend on ``p`` only)."""
    k = np.clip((p * bins).astype(int), 0, bins - 1)
    n = np.bincount(k, minlength=bins).astype(float)
    conf = np.bincount(k, weights=p, minlength=bins)
    _, patient = np.unique(patients, return_inverse=True)
    onehot = np.zeros((len(p), bins), np.float32)
    onehot[np.arange(len(p)), k] = 1.0
    out = np.empty(draws)
    for i in range(0, draws, 250):
        u = rng.random((min(250, draws - i), patient.max() + 1))[:, patient]
        hits = (u < p).astype(np.float32) @ onehot
        out[i:i + len(u)] = np.abs(conf - hits).sum(1) / n.sum()
    return out


def recalibration(y: np.ndarray, p: np.ndarray, patients: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Calibration intercept (slope fixed at 1) and slope of a logistic recalibration on logit p, each with its
    cluster-robust (patient) Wald interval; NaN where the fit does not exist (one class, no spread)."""
    x = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    z = stats.norm.ppf(0.5 + level / 2)
    nan = {"intercept": np.nan, "intercept_lo": np.nan, "intercept_hi": np.nan, "slope": np.nan,
           "slope_lo": np.nan, "slope_hi": np.nan}
    if y.all() or not y.any() or np.ptp(x) == 0:
        return nan
    out = {}
    for name, design, offset, idx in (("intercept", np.ones((len(x), 1)), x, 0),
                                      ("slope", np.column_stack([np.ones_like(x), x]), np.zeros_like(x), 1)):
        beta, cov = _logistic(design, offset, y.astype(float), patients)
        se = np.sqrt(cov[idx, idx]) if np.isfinite(cov[idx, idx]) and cov[idx, idx] >= 0 else np.nan
        b = float(beta[idx])
        out |= {name: b, f"{name}_lo": b - z * se, f"{name}_hi": b + z * se}
    return out


def _logistic(x: np.ndarray, offset: np.ndarray, y: np.ndarray, groups: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Newton-Raphson logistic regression with an offset; the sandwich covariance clustered by ``groups``."""
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        mu = 1 / (1 + np.exp(-np.clip(x @ beta + offset, -30, 30)))
        hess = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(hess, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return beta, np.full((x.shape[1],) * 2, np.nan)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    mu = 1 / (1 + np.exp(-np.clip(x @ beta + offset, -30, 30)))
    bread = np.linalg.pinv(x.T @ (x * (mu * (1 - mu))[:, None]))
    _, g = np.unique(groups, return_inverse=True)
    score = np.stack([np.bincount(g, weights=x[:, j] * (y - mu)) for j in range(x.shape[1])], axis=1)
    n_g = score.shape[0]
    meat = score.T @ score * (n_g / (n_g - 1) if n_g > 1 else np.nan)
    return beta, bread @ meat @ bread


def calibration_test(y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int = 0,
                     boot: int = BOOT) -> dict[str, float]:
    """ECE, what a calibrated model would show on these scores (median and 95th percentile of the per-patient
    null), the consistency-resampling p-value, and the intercept and slope with their patient-clustered CIs."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(y, bool), np.clip(np.asarray(p, float), 0.0, 1.0)
    observed = ece(y, p)
    null = null_eces(p, np.asarray(patients), rng, boot)
    return {"n": len(y), "patients": len(np.unique(patients)), "ece": observed,
            "ece_if_calibrated": float(np.median(null)), "ece_if_calibrated_95": float(np.percentile(null, 95)),
            "p": float((1 + (null >= observed - 1e-12).sum()) / (boot + 1))} | recalibration(y, p, patients)


def calibration_table(predictions: pl.DataFrame, aurocs: pl.DataFrame, names: dict[str, str],
                      axis: str) -> pl.DataFrame:
    """One row per analysed single-label trial: ECE [CI], what a calibrated model would show, p, Holm p and a
    verdict (miscalibrated / consistent with calibration / degenerate: one score for every image)."""
    test = predictions.filter(pl.col("split") == "test")
    rows = []
    for trial in aurocs.filter(pl.col("positive").is_not_null()).iter_rows(named=True):
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


def plot_reliability(predictions: pl.DataFrame, table: pl.DataFrame, aurocs: pl.DataFrame, path,
                     rows: str = "representation") -> None:
    """Small multiples that stay readable at paper scale: one reliability panel per backbone (9 panels for 225
    trials, not 225), a line per trial coloured by its row (representation), observed frequency against mean
    probability per bin; a miscalibrated trial (after Holm) drawn solid with its bins marked, the others dashed;
    the diagonal a calibrated model follows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = predictions.filter(pl.col("split") == "test")
    trials = {t["trial_id"]: t for t in aurocs.iter_rows(named=True)}
    label = rows if rows in table.columns else "run_name"
    colours = row_colours([str(x) for x in table[label].unique(maintain_order=True).to_list()])
    backbones = table["backbone"].unique(maintain_order=True).to_list() if "backbone" in table.columns else ["all"]
    cols = min(len(backbones), 3)
    nrows = -(-len(backbones) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.5 * nrows), squeeze=False)
    for ax, bb in zip(axes.ravel(), backbones, strict=True):
        part = table.filter(pl.col("backbone") == bb) if "backbone" in table.columns else table
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":")
        shown = set()
        for row in part.iter_rows(named=True):
            _, y, p, _ = trial_scores(test, trials[row["trial_id"]])
            n, conf, freq = bin_stats(y, p)
            keep = n > 0
            bad = row["verdict"] == Calibration.MISCALIBRATED.word
            name = str(row[label])
            ax.plot(conf[keep], freq[keep], color=colours[name], lw=1.6 if bad else 1.0, ls="-" if bad else "--",
                    marker="o" if bad else None, ms=4, alpha=0.9,
                    label=None if name in shown else name)
            shown.add(name)
        worst = part.sort("ece", descending=True).row(0, named=True)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed frequency")
        bad_n = int((part["verdict"] == Calibration.MISCALIBRATED.word).sum())
        ax.set_title(f"{bb}: {bad_n} of {part.height} miscalibrated\n"
                     f"highest ECE {worst['ece']:.3f} ({worst[label]})", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    for ax in axes.ravel()[len(backbones):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    plot_reliability(run.predictions, table, run.aurocs, run.figure("reliability"), run.rows)
    a.figures["reliability"] = ("Reliability per backbone: observed frequency of the positive class against the "
                                "mean predicted probability in 10 bins, a line per trial coloured by its "
                                f"{run.rows}; solid with markers: miscalibrated after Holm; dotted diagonal: "
                                "perfect calibration")
    bad = table.filter(pl.col("verdict") == Calibration.MISCALIBRATED.word)
    a.text = (f"\n\nCalibration: {bad.height} of {table.height} trial(s) miscalibrated (consistency resampling, "
              f"Holm); ECE from {table['ece'].min():.3f} to {table['ece'].max():.3f} (analysis/calibration.csv).")
    a.sections = [Section("Calibration (does a probability mean what it says?)", tables=("calibration",),
                          figures=("reliability",), verdict="verdict", note=(
                              "ECE over 10 equal-width bins; 'ECE if calibrated' is the median (and 95th "
                              "percentile) ECE of labels drawn from the model's own probabilities, one draw per "
                              "patient, what a perfectly calibrated model shows on these patients; p: the share of "
                              "those reaching the observed ECE, Holm-corrected over the trials. Intercept (0 when "
                              "calibrated in the large) and slope (1 when calibrated; < 1 overconfident) of a "
                              "logistic recalibration with patient-clustered 95 % CIs."))]
    return a
