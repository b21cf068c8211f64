"""The source-only ceiling: the AUROC a classifier would reach from the acquiring hospital alone (and, where the
manifest has them, the view and the device), next to the lung-hiding AUROCs. Zech et al. (2018) found hospital
identity alone reached AUROC 0.861 on pneumonia; where this ceiling is high, a lung-hiding model's AUROC can be
the hospital's and the task is confounded before any model is trained.

Per test set of the run (a task, design and fold; every trial of it shares the images): the positive rate of
each value of the source columns is estimated on the validation split (one pseudo-image at the overall rate, so a
value seen once is not certain), every test image is scored by its value's rate (a value never seen in
validation: the overall rate), and the AUROC gets the patient-clustered score interval every AUROC of the report
has. Labels and columns only: no model, no image. Step ``source_ceiling``; ``analysis/source_ceiling.csv``.
"""

from __future__ import annotations

import polars as pl

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.tasks import TASKS
from cxrray.data.trial_rows import Predictions, of_trials
from cxrray.report.page import Artifacts, Section
from cxrray.representations import lung_hiding
from cxrray.scalars import num
from cxrray.stats.interval import auroc_interval

COLUMNS = ("source", "view", "device")  # the acquisition, in this order, where a column has 2+ values
GROUP = ("study", "task", "design", "fold")  # the trials that share one test set


def used_columns(frame: pl.DataFrame) -> list[str]:
    """The acquisition columns that vary in ``frame`` (a constant one carries nothing)."""
    return [c for c in COLUMNS if c in frame.columns and frame[c].cast(pl.Utf8).n_unique() > 1]


def ceiling(val: pl.DataFrame, test: pl.DataFrame, positive: int, columns: list[str]) -> dict | None:
    """AUROC [interval] of scoring each test image by its acquisition's positive rate on validation; None when the
    test set lacks a class or nothing varies."""
    if not columns or val.is_empty():
        return None
    key = pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("") for c in columns], separator="|").alias("key")
    v = val.select(key, (pl.col("target") == positive).alias("y"))
    prior = num(v["y"].mean())
    rates = v.group_by("key").agg(((pl.col("y").sum() + prior) / (pl.len() + 1)).alias("rate"))
    scored = test.select(key, (pl.col("target") == positive).alias("y"), "patient_id").join(
        rates, on="key", how="left").with_columns(pl.col("rate").fill_null(prior))
    y = scored["y"].to_numpy()
    if y.all() or not y.any():
        return None
    ci = auroc_interval(y, scored["rate"].to_numpy(), scored["patient_id"].to_numpy())
    return {"columns": "+".join(columns), "values": int(scored["key"].n_unique()), "auroc": ci.auc, "ci_lo": ci.lo,
            "ci_hi": ci.hi, "patients_pos": ci.patients_pos, "patients_neg": ci.patients_neg}


def source_ceilings(predictions: Predictions, aurocs: pl.DataFrame) -> pl.DataFrame:
    """One row per test set of the analysed trials (``GROUP``): the source-only ceiling, and the lung-hiding
    trials' AUROCs of that test set beside it (their range)."""
    rows = []
    keys = [c for c in GROUP if c in aurocs.columns]
    for _, group in aurocs.group_by(keys, maintain_order=True):
        first = group.row(0, named=True)
        task = TASKS.get(first["task"])
        if task.positive is None:
            continue  # multilabel: no one positive class
        own = of_trials(predictions, [first["trial_id"]])
        columns = used_columns(own)
        found = ceiling(own.filter(pl.col("split") == "val"), own.filter(pl.col("split") == "test"),
                        task.positive_index, columns)
        if found is None:
            continue
        hidden = group.filter(pl.col("representation").is_in(lung_hiding())) if "representation" in group.columns \
            else group.clear()
        rows.append({k: first[k] for k in keys if k != "study"} | found | {
            "hidden_auroc_min": hidden["auroc"].min() if hidden.height else None,
            "hidden_auroc_max": hidden["auroc"].max() if hidden.height else None})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


@analysis_step(order=49)
def source_ceiling(run: LoadedRun) -> Artifacts:
    """The AUROC of the acquisition alone (hospital, view, device): how much of the task a shortcut could explain."""
    a = Artifacts(sections=[Section("Source-only ceiling", tables=("source_ceiling",), group="bias", note=(
        "the AUROC of scoring each test image by the positive rate of its hospital (and view, device where they "
        "vary) on the validation split, with its patient-clustered 95 % interval: what a pure acquisition "
        "shortcut could reach; beside it the lung-hiding trials' AUROCs on the same test set"))])
    table = source_ceilings(run.predictions, run.aurocs) if run.aurocs.height else pl.DataFrame()
    if table.is_empty():
        return a
    a.tables["source_ceiling"] = table
    lines = []
    for r in table.iter_rows(named=True):
        hidden = (f"; the lung-hiding trials reach {r['hidden_auroc_min']:.3f}-{r['hidden_auroc_max']:.3f}"
                  if r["hidden_auroc_min"] is not None else "")
        where = ", ".join(f"{k} {r[k]}" for k in ("task", "design", "fold") if k in r)
        lines.append(f"- {where}: {r['columns']} alone ({r['values']} values) reaches AUROC {r['auroc']:.3f} "
                     f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]{hidden}")
    a.text = ("\n\nSource-only ceiling (the acquisition alone, its positive rates fitted on validation; 95 % "
              "interval clustered by patient):\n" + "\n".join(lines))
    return a
