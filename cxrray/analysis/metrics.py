"""Per-trial and per-cell classification metrics from stored per-image predictions.

Per trial (test split): accuracy; per class sensitivity, specificity, PPV, F1
and one-vs-rest AUROC; macro AUROC; the confusion matrix. Per cell (every axis
but seed and fold): mean and sd over seeds/folds with the mean's t-interval (replicates
are aggregated, never pooled), and the test AUROC per cell the same way. Accuracy per
severity level and true class with Wilson CIs (COVIDGR).
numpy counts the confusion matrices (scikit-learn's checks cost 2 ms a call: 40 s at 10,000 trials); nothing
here retrains. Step ``metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl
from scipy import stats

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.config import CELL_AXES
from cxrray.data.trial_rows import Predictions, frames, restricted, trial_groups
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num
from cxrray.stats.interval import auroc_interval

SEVERITY_ORDER = ("none", "Normal-PCR+", "Mild", "Moderate", "Severe")


def prob_columns(frame: pl.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns that hold values for this frame's task, in class order."""
    return [c for c in frame.columns if c.startswith("prob_") and frame[c].null_count() < frame.height]


def confusion_matrix(y: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs, rows the true class (scikit-learn's ``confusion_matrix`` with
    labels 0..classes-1: a value outside them is not counted)."""
    y, pred = np.asarray(y, np.int64), np.asarray(pred, np.int64)
    keep = (y >= 0) & (y < classes) & (pred >= 0) & (pred < classes)
    return np.bincount(y[keep] * classes + pred[keep], minlength=classes * classes).reshape(classes, classes)


def class_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str],
                  groups: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy, macro AUROC and per-class sensitivity / specificity / PPV / F1 / one-vs-rest AUROC with its
    95 % interval (``interval.auroc_interval``: clustered by ``groups``, the patients, when given)."""
    pred = prob.argmax(1)
    cm = confusion_matrix(y, pred, len(classes))
    out = {"n": len(y), "accuracy": float((pred == y).mean()) if len(y) else np.nan}
    aurocs = []
    for k, c in enumerate(classes):
        tp, fn = cm[k, k], cm[k].sum() - cm[k, k]
        fp, tn = cm[:, k].sum() - cm[k, k], cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]
        sens = tp / (tp + fn) if tp + fn else np.nan
        ppv = tp / (tp + fp) if tp + fp else np.nan
        out |= {f"sens_{c}": sens, f"spec_{c}": tn / (tn + fp) if tn + fp else np.nan, f"ppv_{c}": ppv,
                f"f1_{c}": 2 * sens * ppv / (sens + ppv) if sens + ppv > 0 else np.nan}
        pos = y == k
        ci = auroc_interval(pos, prob[:, k], groups) if 0 < pos.sum() < len(y) and np.isfinite(prob[:, k]).all() \
            else None  # one-vs-rest
        out |= {f"auroc_{c}": ci.auc if ci else np.nan, f"auroc_{c}_lo": ci.lo if ci else np.nan,
                f"auroc_{c}_hi": ci.hi if ci else np.nan}
        aurocs.append(out[f"auroc_{c}"])
    out["auroc_macro"] = float(np.nanmean(aurocs)) if not np.isnan(aurocs).all() else np.nan
    return out


def _arrays(part: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cols = prob_columns(part)
    return part["target"].to_numpy(), part.select(cols).to_numpy(), [c[len("prob_"):] for c in cols]


def trial_metrics(predictions: Predictions, results: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """One row per finished single-label trial: spec axes plus ``class_metrics`` on ``split``."""
    rows = []
    for (tid,), part in trial_groups(predictions, split):
        if (part["target"] < 0).all():
            continue  # multilabel pretraining phase: evaluated by its own macro AUROC
        y, prob, classes = _arrays(part)
        rows.append({"trial_id": tid} | class_metrics(y, prob, classes, part["patient_id"].to_numpy()))
    if not rows:
        return pl.DataFrame()
    keep = [c for c in (*CELL_AXES, "trial_id", "fold", "seed") if c in results.columns]
    return results.select(keep).join(pl.DataFrame(rows, infer_schema_length=None), on="trial_id")


class Confusions(Mapping[str, pl.DataFrame]):
    """Per trial (key ``confusion/<trial id>``): the confusion matrix as a table (rows = true class, columns =
    predicted). The matrices are held as arrays and each table is made when it is read, so the analysis writes
    10,000 trials' tables without holding 10,000 frames (about 10 KB each)."""

    def __init__(self, predictions: Predictions, split: str = "test") -> None:
        self.matrices: dict[str, tuple[list[str], np.ndarray]] = {}
        for (tid,), part in trial_groups(predictions, split):
            if (part["target"] < 0).all():
                continue
            y, prob, classes = _arrays(part)
            cm = confusion_matrix(y, prob.argmax(1), len(classes))
            self.matrices[f"confusion/{tid}"] = (list(classes), cm)

    def __getitem__(self, key: str) -> pl.DataFrame:
        classes, cm = self.matrices[key]
        return pl.DataFrame({"true": classes} | {f"pred_{c}": cm[:, k] for k, c in enumerate(classes)})

    def __iter__(self) -> Iterator[str]:
        return iter(self.matrices)

    def __len__(self) -> int:
        return len(self.matrices)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t interval over replicates (seeds, folds: independent fits); NaN bounds with fewer
    than two replicates (one fit says nothing about the spread between fits)."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def cell_summary(per_trial: pl.DataFrame) -> pl.DataFrame:
    """Per cell (axes without seed/fold): mean and sd over seeds/folds of each metric, and for accuracy and
    macro AUROC the mean's t-interval. Replicates are aggregated, never pooled: concatenating the scores of
    different models is no model's AUROC (two models at 1.000 and 0.917 pool to 0.729)."""
    if per_trial.is_empty():
        return per_trial
    axes = [c for c in CELL_AXES if c in per_trial.columns]
    metric_cols = [c for c in per_trial.columns if c not in (*axes, "trial_id", "fold", "seed", "n")]
    agg = [pl.len().alias("n_trials")]
    agg += [pl.col(c).mean().alias(f"{c}_mean") for c in metric_cols]
    agg += [pl.col(c).std().alias(f"{c}_sd") for c in metric_cols]
    agg += [pl.col(c).alias(f"_{c}") for c in ("accuracy", "auroc_macro")]
    summary = per_trial.group_by(axes, maintain_order=True).agg(agg)
    for c in ("accuracy", "auroc_macro"):
        cis = [t_interval(np.asarray(v, float)) for v in summary[f"_{c}"].to_list()]
        summary = summary.with_columns(pl.Series(f"{c}_t_lo", [x[1] for x in cis]),
                                       pl.Series(f"{c}_t_hi", [x[2] for x in cis])).drop(f"_{c}")
    return summary


def cell_aurocs(aurocs: pl.DataFrame) -> pl.DataFrame:
    """Per protocol cell: the replicates' test AUROCs (seeds, folds), their mean with a t-interval, and the
    per-replicate intervals side by side."""
    axes = [c for c in CELL_AXES if c in aurocs.columns]
    order = [c for c in ("fold", "seed") if c in aurocs.columns]
    rows = []
    for key, g in aurocs.drop_nans("auroc").sort(order or "trial_id").group_by(axes, maintain_order=True):
        mean, lo, hi = t_interval(g["auroc"].to_numpy())
        rows.append(dict(zip(axes, key, strict=True)) | {
            "replicates": g.height, "auroc_mean": mean, "t_lo": lo, "t_hi": hi,
            "auroc_sd": num(g["auroc"].std()) if g.height > 1 else float("nan"),
            "per_replicate": "; ".join(f"{a:.3f} [{x:.3f}, {y:.3f}]" for a, x, y in
                                       g.select("auroc", "ci_lo", "ci_hi").iter_rows())})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (sound at 0 and n, unlike the normal approximation)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def severity_accuracy(predictions: Predictions, results: pl.DataFrame, split: str = "test") -> pl.DataFrame:
    """Accuracy per severity level (Normal-PCR+, Mild, Moderate, Severe ...) and true class, per cell, pooled
    over seeds/folds, with its Wilson 95 % CI. Positives and negatives that share a severity word are never
    pooled: a model calling every image positive is right on every positive and wrong on every negative."""
    axes = [c for c in CELL_AXES if c in results.columns]
    counts = []  # per window of trials: images and correct calls per cell, severity and class (summed below)
    for frame in frames(predictions, split):
        test = frame.filter((pl.col("target") >= 0) & (pl.col("severity") != ""))
        tids, severity, classes_of, correct = [], [], [], []  # one frame per window (a frame per trial: 10 KB)
        for (tid,), part in test.group_by("trial_id", maintain_order=True):
            y, prob, classes = _arrays(part)
            tids.append(np.full(len(y), tid, dtype=object))
            severity.append(part["severity"].to_numpy())
            classes_of.append(np.asarray(classes, dtype=object)[y])
            correct.append(prob.argmax(1) == y)
        if not tids:
            continue
        rows = pl.DataFrame({"trial_id": np.concatenate(tids).tolist(),
                             "severity": np.concatenate(severity).tolist(),
                             "class": np.concatenate(classes_of).tolist(), "correct": np.concatenate(correct)})
        counts.append(rows.join(results.select("trial_id", *axes), on="trial_id").group_by(
            *axes, "severity", "class").agg(pl.len().alias("n"), pl.col("correct").sum().alias("k")))
    if not counts:
        return pl.DataFrame()
    order = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    out = (pl.concat(counts).group_by(*axes, "severity", "class").agg(pl.col("n").sum(), pl.col("k").sum())
           .with_columns(pl.col("severity").replace_strict(order, default=len(order)).alias("_o"))
           .sort(*axes, "_o", "class").drop("_o"))
    cis = [wilson(k, n) for k, n in zip(out["k"], out["n"], strict=True)]
    return out.with_columns((pl.col("k") / pl.col("n")).alias("accuracy"),
                            pl.Series("accuracy_lo", [c[0] for c in cis]),
                            pl.Series("accuracy_hi", [c[1] for c in cis])).drop("k")


@analysis_step(order=20)
def metrics(run: LoadedRun) -> Artifacts:
    """Per-class metrics per trial and per cell, confusion matrices, accuracy per severity level."""
    a = Artifacts(sections=[Section("Per-class metrics (mean over seeds/folds)", tables=("cell_metrics",)),
                            Section("Accuracy per severity (Wilson 95 % CI)", tables=("severity_accuracy",)),
                            Section("Per-trial classification metrics (test split)", tables=("trial_metrics",),
                                    group="detail")])
    per_trial = trial_metrics(run.predictions, run.results)
    if per_trial.is_empty() or run.aurocs.is_empty():
        return a
    ids = run.aurocs["trial_id"].implode()
    per_trial = per_trial.filter(pl.col("trial_id").is_in(ids))
    analysed = restricted(run.predictions, per_trial["trial_id"])  # the trials the confusion and severity read
    a.tables |= {"trial_metrics": per_trial, "cell_metrics": cell_summary(per_trial)}
    cells = cell_aurocs(run.selected)
    if not cells.is_empty() and num(cells["replicates"].max()) > 1:
        a.tables["cell_aurocs"] = cells
        a.text += "\n\nPer cell over seeds/folds (mean test AUROC, 95 % t-interval; replicates aggregated, not " \
                  "pooled):\n" + "\n".join(
                      f"- {' / '.join(str(r[c]) for c in ('representation', 'backbone') if c in r)}: "
                      f"{r['auroc_mean']:.3f} [{r['t_lo']:.3f}, {r['t_hi']:.3f}] over {r['replicates']}"
                      for r in cells.iter_rows(named=True))
        a.sections.insert(0, Section("Per cell over seeds and folds (mean AUROC, t-interval)", tables=("cell_aurocs",)))
    a.detail = Confusions(analysed)
    severity = severity_accuracy(analysed, run.results)
    if not severity.is_empty():
        a.tables["severity_accuracy"] = severity
    return a
