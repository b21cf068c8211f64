"""Per-trial test AUROC with its interval, the condition x backbone table and its figures (step ``aurocs``).

Computed only from the stored per-image predictions (``predictions.parquet``),
so the analysis reruns on any finished or partial run without retraining.
Each trial is scored on its task's positive class (``Task.positive``); the
pretraining phases of a staged study (trials that other trials start from)
are inputs of the study, not its results, and are left out.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.config import CONDITION_AXES, SELECTION_AXES
from cxrray.data.tasks import TASKS, degeneracy
from cxrray.data.trial_rows import ByTrial, Predictions, of_trials, trial_groups
from cxrray.plots.figures import SEEDS_SHOWN, first_seeds, plot_roc_curves
from cxrray.plots.palette import protocol_sorted
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num
from cxrray.stats.interval import SCORE_METHOD, auroc_interval, patients_per_class

AXES = CONDITION_AXES  # the axes a study varies as table rows (cxrray.config)


def positive_class(task: str) -> str | None:
    """The class a trial of ``task`` is scored on (None: multilabel, not in these tables)."""
    return TASKS.get(task).positive if task in TASKS else None


def positive_title(aurocs: pl.DataFrame) -> str:
    """"COVID-19 vs rest" when every analysed task shares one positive class, else "positive class vs rest"."""
    tasks = sorted(set(aurocs["task"])) if "task" in aurocs.columns and aurocs.height else []
    labels = {TASKS.get(t).positive_label for t in tasks if t in TASKS}
    return f"{labels.pop()} vs rest" if len(labels) == 1 else "positive class vs rest"


def trial_aurocs(predictions: Predictions, results: pl.DataFrame, split: str = "test",
                 level: float = 0.95) -> pl.DataFrame:
    """One row per finished target trial: spec fields, AUROC of its task's positive class vs rest (column
    ``positive``) with its interval clustered by patient (``interval.auroc_interval``: never zero width), case and
    patient counts, balanced accuracy, and ``degenerate``: why the model did not learn, from the trial's record
    or from the predictions read here (NaN, infinite or constant scores), "" when it learned."""
    rows = []
    task_of = dict(zip(results["trial_id"], results["task"], strict=True)) if "task" in results.columns else {}
    loss_of = (dict(zip(results["trial_id"], results["train_loss_min"], strict=True))
               if "train_loss_min" in results.columns else {})
    upstream = set(results["init_from"]) if "init_from" in results.columns else set()
    for trial_id, part in trial_groups(predictions, split):  # a window of trials read at a time
        positive = positive_class(task_of.get(trial_id[0], ""))
        if positive is None or trial_id[0] in upstream or part[f"prob_{positive}"].null_count() == part.height:
            continue  # multilabel, or a pretraining phase (ChestX-ray14, pneumonia) feeding the target trials
        task = TASKS.get(task_of[trial_id[0]])
        y, score = task.positive_scores(part)
        loss = loss_of.get(trial_id[0])
        seen = degeneracy(part, task, [loss] if loss is not None else None)
        finite = bool(np.isfinite(score).all())
        extra = {"positive": positive, "balanced_accuracy": balanced_accuracy(part, task) if finite else np.nan,
                 "degenerate_seen": seen}
        pp, pn = patients_per_class(y, part["patient_id"].to_numpy())
        counts = {"n_pos": int(y.sum()), "n_neg": int((~y).sum()), "patients_pos": pp, "patients_neg": pn}
        if y.all() or not y.any() or not finite:
            rows.append({"trial_id": trial_id[0], "auroc": np.nan, "ci_lo": np.nan, "ci_hi": np.nan} | counts | extra)
            continue
        ci = auroc_interval(y, score, part["patient_id"].to_numpy(), level)  # clustered by patient
        rows.append({"trial_id": trial_id[0], "auroc": ci.auc, "ci_lo": ci.lo, "ci_hi": ci.hi} | counts | extra)
    aur = pl.DataFrame(rows, schema={"trial_id": pl.Utf8, "auroc": pl.Float64, "ci_lo": pl.Float64,
                                     "ci_hi": pl.Float64, "n_pos": pl.Int64, "n_neg": pl.Int64,
                                     "patients_pos": pl.Int64, "patients_neg": pl.Int64, "positive": pl.Utf8,
                                     "balanced_accuracy": pl.Float64, "degenerate_seen": pl.Utf8})
    keep = [c for c in ("trial_id", "study", "representation", "backbone", "method", "task", "pretraining", "design",
                        "fold", "seed", "init", "best_val_auroc", "degenerate", "mask_dilation")
            if c in results.columns]
    out = results.select(keep).join(aur, on="trial_id", how="inner")
    if "degenerate" not in out.columns:  # a run from before degeneracy was recorded: the predictions decide
        out = out.with_columns(pl.lit("").alias("degenerate"))
    recorded = pl.col("degenerate").fill_null("")
    return out.with_columns(pl.when(recorded != "").then(recorded).otherwise(pl.col("degenerate_seen"))
                            .alias("degenerate")).drop("degenerate_seen")


def balanced_accuracy(part: pl.DataFrame, task) -> float:
    """Mean per-class recall of the argmax prediction (a model calling every image one class scores 1 / K)."""
    probs = part.select([f"prob_{c}" for c in task.classes]).to_numpy()
    pred, y = probs.argmax(1), part["target"].to_numpy()
    recalls = [float((pred[y == k] == k).mean()) for k in range(task.num_classes) if (y == k).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def select_by_validation(aurocs: pl.DataFrame) -> pl.DataFrame:
    """Where one protocol cell (axes, backbone, fold, seed) has several hyper-parameter settings, keep the
    setting with the best validation AUROC (ties: the smallest trial id): the test set never chooses."""
    cell = [c for c in SELECTION_AXES if c in aurocs.columns]
    # Ties (validation AUROC 1.000 is frequent) go to the smallest trial id, whatever order the trials came in.
    return (aurocs.sort(["best_val_auroc", "trial_id"], descending=[True, False], nulls_last=True,
                        maintain_order=True).group_by(cell, maintain_order=True).first().sort("trial_id"))


def row_axis(aurocs: pl.DataFrame) -> tuple[str, pl.DataFrame]:
    """The axis a study varies (representation for hide and seek, pretraining path for staged,
    design and task for source bias); several varying axes are joined into one ``condition`` label."""
    varying = [a for a in AXES if a in aurocs.columns and aurocs[a].n_unique() > 1]
    if len(varying) <= 1:
        return (varying[0] if varying else "representation"), aurocs
    label = pl.concat_str([pl.col(a) for a in varying], separator=" / ").alias("condition")
    return "condition", aurocs.with_columns(label)


def _cell(r: dict) -> str:
    """'AUROC [lo, hi], bal. acc. x' for one trial; a degenerate model is named, its numbers kept for the record."""
    text = f"{r['auroc']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]" if r["auroc"] == r["auroc"] else "no AUROC"
    if r["balanced_accuracy"] is not None and r["balanced_accuracy"] == r["balanced_accuracy"]:
        text += f", bal. acc. {r['balanced_accuracy']:.2f}"
    return text + (" DEGENERATE" if r["degenerate"] else "")


TEXT_SEEDS = 10  # the terminal's AUROC table lists this many seeds per cell (analysis/auroc_table.csv: every one)
TEXT_LISTED = 20  # the terminal names this many degenerate trials (analysis/trial_aurocs.csv: every one)


def auroc_table(aurocs: pl.DataFrame, rows: str = "representation") -> pl.DataFrame:
    """``rows`` x backbone table of 'AUROC [lo, hi], bal. acc. b' strings (seeds listed side by side); a trial
    whose model did not learn is marked DEGENERATE."""
    if "balanced_accuracy" not in aurocs.columns:
        aurocs = aurocs.with_columns(pl.lit(None, pl.Float64).alias("balanced_accuracy"))
    if "degenerate" not in aurocs.columns:
        aurocs = aurocs.with_columns(pl.lit("").alias("degenerate"))
    cells = aurocs.with_columns(
        pl.struct("auroc", "ci_lo", "ci_hi", "balanced_accuracy", "degenerate").map_elements(
            _cell, return_dtype=pl.Utf8).alias("cell")
    ).group_by(rows, "backbone").agg(pl.col("cell").sort_by(*[c for c in ("fold", "seed") if c in aurocs.columns])
                                     .str.join("; "))
    wide = cells.pivot(on="backbone", index=rows, values="cell")
    wide = protocol_sorted(wide, rows)  # rows in protocol order, as in every table and figure
    return wide.select(rows, *sorted(c for c in wide.columns if c != rows))


def format_table(table: pl.DataFrame, title: str) -> str:
    """Plain-text table for the terminal and the markdown report."""
    cols = table.columns
    body = [[str(v) if v is not None else "-" for v in r] for r in table.iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, "", line(cols), sep, *(line(r) for r in body)])


@analysis_step(order=10)
def aurocs(run: LoadedRun) -> Artifacts:
    """Test AUROC per trial with its interval, the condition x backbone table, forest plot and ROC curves."""
    table = auroc_table(run.aurocs, run.rows)
    a = Artifacts(tables={"trial_aurocs": run.selected, "auroc_table": table})
    n_pos, n_neg = ((int(num(run.aurocs["n_pos"].max())), int(num(run.aurocs["n_neg"].max())))
                    if run.aurocs.height else (0, 0))
    chosen = (f"; per cell the best of {run.n_trials // max(run.aurocs.height, 1)} hyper-parameter settings by "
              "validation AUROC") if run.n_trials > run.aurocs.height else ""
    listed, more = first_seeds(run.aurocs, TEXT_SEEDS)  # 10,000 seeds in one cell would be 2 MB of text
    a.text = format_table(auroc_table(listed, run.rows) if more else table,
                          f"Test AUROC, {positive_title(run.aurocs)}, with its 95 % interval ({SCORE_METHOD}; "
                          f"{n_pos} positive / {n_neg} negative test images{chosen}"
                          + (f"; the first {TEXT_SEEDS} seeds, {more:,} more in analysis/auroc_table.csv)" if more
                             else ")"))
    failed = run.results.filter(pl.col("status") != "finished")
    if failed.height:
        a.text += f"\n\n{failed.height} trial(s) without predictions: " + ", ".join(failed["run_name"].to_list())
    degenerate = run.selected.filter(pl.col("degenerate") != "")
    if degenerate.height:
        names = dict(zip(run.results["trial_id"], run.results["run_name"], strict=True))
        a.text += (f"\n\n{degenerate.height} DEGENERATE trial(s), not used as evidence (the model did not learn):\n"
                   + "\n".join(f"- {names.get(r['trial_id'], r['trial_id'])}: {r['degenerate']}"
                                for r in degenerate.head(TEXT_LISTED).iter_rows(named=True))
                   + (f"\n- and {degenerate.height - TEXT_LISTED:,} more (analysis/trial_aurocs.csv, column "
                      "degenerate)" if degenerate.height > TEXT_LISTED else ""))
    shown = run.aurocs.drop_nans("auroc")
    if shown.height:
        drawn = first_seeds(shown)[0]["trial_id"]  # the figure's trials only, read from the stored table
        left = plot_roc_curves(of_trials(run.predictions, drawn, "test"), shown, run.figure("roc_curves"), run.rows)
        a.figures["roc_curves"] = f"ROC curves, {positive_title(shown)}, per trial (one panel per backbone, one " \
                                  f"colour per {run.rows}" + (f"; the first {SEEDS_SHOWN} seeds, {left} more in the " \
                                                              "table)" if left else ")")
    a.sections = [Section("ROC curves", figures=("roc_curves",)),
                  Section(f"Test AUROC per trial (95 % {SCORE_METHOD})", tables=("trial_aurocs",),
                          group="detail")]
    return a


def trial_scores(test: pl.DataFrame | ByTrial, trial: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """(rows, is-positive, positive-class score, patient) of one trial's test images, in row order; ``test``
    by trial (``by_trial``) when many trials are scored (a filter per trial is quadratic in trials)."""
    part = (test.filter(pl.col("trial_id") == trial["trial_id"]) if isinstance(test, pl.DataFrame)
            else test.rows(trial["trial_id"])).sort("row")
    y, score = TASKS.get(trial["task"]).positive_scores(part)
    return part["row"].to_numpy(), y, score, part["patient_id"].to_numpy()
