"""Subgroups: does the model work as well for every sex, age band, view and source?

Per analysed trial (test split, the task's positive class): the AUROC of each subgroup (sex, age band, view,
source, from the manifest columns the trial's predictions carry) with its interval clustered by patient, and
its gap to the rest of the test set. The patient is the unit throughout:

- a subgroup (and the rest) needs ``MIN_PATIENTS`` positive and negative patients to be tested, else it is listed
  as too small;
- an attribute with two values is one comparison (women against men), tested once; with more values each is
  tested against the rest;
- the gap's interval and p come from the patients' influence on both AUROCs, so where the two sides share
  patients (a patient's AP and PA images) the comparison is paired, and unpaired where they share none; each
  side's variance is at least its score interval's;
- Holm over the comparisons of a trial.

Yang et al. (Nature Medicine 2024) found such gaps where CXR models read demographic shortcuts. Step
``subgroups``; ``analysis/subgroups.csv``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.manifest import age_band
from cxrray.data.tasks import TASKS, Task
from cxrray.data.trial_rows import Predictions, by_trial
from cxrray.plots.palette import protocol_sorted
from cxrray.report.page import Artifacts, Section
from cxrray.stats.interval import auroc_interval, clustered_difference, patients_per_class
from cxrray.stats.multiplicity import holm
from cxrray.verdicts.simulate import Truth, draw
from cxrray.verdicts.verdict import StepWord, Verdict

MIN_PATIENTS = 10  # positive and negative patients a subgroup (and the rest) needs for an AUROC and a test
ATTRIBUTES = ("sex", "age band", "view", "source")


class Gap(StepWord):
    """The subgroup step's verdicts."""

    WORSE = ("worse in this subgroup", Verdict.SHORTCUT)
    BETTER = ("better in this subgroup", Verdict.INCONCLUSIVE)
    NONE = ("no gap found", Verdict.NO_SHORTCUT)
    TOO_FEW = ("too few to test", Verdict.DEGENERATE)


def attribute_values(part: pl.DataFrame) -> dict[str, pl.Series]:
    """The subgroup attributes present in a trial's predictions (older runs carry no sex, age or view)."""
    out = {}
    if "sex" in part.columns:
        out["sex"] = part["sex"].cast(pl.Utf8).fill_null("").str.strip_chars()
    if "age" in part.columns:
        out["age band"] = age_band(part["age"].fill_null(""))
    if "view" in part.columns:
        out["view"] = part["view"].cast(pl.Utf8).fill_null("").str.strip_chars().str.to_uppercase()
    if "source" in part.columns:
        out["source"] = part["source"].cast(pl.Utf8).fill_null("")
    return out


def trial_subgroups(part: pl.DataFrame, positive_index: int, positive: str) -> list[dict]:
    """Rows of one trial: per comparison (a value against the rest, or the two values of a binary attribute),
    AUROC [CI], the other side's AUROC, the gap with its CI and p, with patients as the unit."""
    y = (part["target"] == positive_index).to_numpy()
    s = part[f"prob_{positive}"].cast(pl.Float64).to_numpy()
    g = part["patient_id"].cast(pl.Utf8).to_numpy()
    rows = []
    for attribute, values in attribute_values(part).items():
        v = values.to_numpy()
        levels = sorted(x for x in set(v) if x)
        if len(levels) < 2:
            continue
        for level in levels[:1] if len(levels) == 2 else levels:
            inside = v == level
            rest = (v != level) & (v != "")
            against = levels[1] if len(levels) == 2 else "rest"
            sizes = [patients_per_class(y[m], g[m]) for m in (inside, rest)]
            row = {"attribute": attribute, "subgroup": level, "against": against, "n": int(inside.sum()),
                   "patients": len(set(g[inside])), "patients_pos": sizes[0][0], "patients_neg": sizes[0][1]}
            if min(min(x) for x in sizes) < MIN_PATIENTS:
                rows.append(row | {"auroc": np.nan, "ci_lo": np.nan, "ci_hi": np.nan, "auroc_rest": np.nan,
                                   "gap": np.nan, "gap_lo": np.nan, "gap_hi": np.nan, "p": np.nan,
                                   "shared_patients": 0, "note": f"fewer than {MIN_PATIENTS} positive or negative "
                                                                 f"patients (here or in {against})"})
                continue
            ci = auroc_interval(y[inside], s[inside], g[inside])
            gap, lo, hi, p = clustered_difference(y, s, g, inside, rest)
            shared = len(set(g[inside]) & set(g[rest]))
            rows.append(row | {"auroc": ci.auc, "ci_lo": ci.lo, "ci_hi": ci.hi, "auroc_rest": ci.auc - gap,
                               "gap": gap, "gap_lo": lo, "gap_hi": hi, "p": p, "shared_patients": shared,
                               "note": f"paired: {shared} patient(s) on both sides" if shared else ""})
    return rows


def per_trial(predictions: Predictions, aurocs: pl.DataFrame, names: dict[str, str], axis: str,
              rows_of: Callable[[pl.DataFrame, Task, str], list[dict]]) -> pl.DataFrame:
    """``rows_of(the trial's predictions, its task, its positive class)`` for every analysed single-label trial
    whose scores are finite (a diverged model is named degenerate by the verdict step), each row with the trial,
    its run name, its row-axis value and ``p_holm``: Holm over that trial's tested comparisons (``p`` not NaN)."""
    analysed = aurocs.filter(pl.col("positive").is_not_null())
    of_trial = by_trial(predictions, analysed["trial_id"], split=None)  # every split's rows, trial by trial
    # rows as dicts (about 2 KB each: at 10,000 trials all of them held 300 MiB) become a frame every
    # ROWS_PER_FRAME rows (a frame per trial held about 40 KB)
    out: list[dict] = []
    frames: list[pl.DataFrame] = []
    for trial in analysed.iter_rows(named=True):
        part = of_trial.get(trial["trial_id"])
        if part is None or not part[f"prob_{trial['positive']}"].cast(pl.Float64).is_finite().all():
            continue
        rows = rows_of(part, TASKS.get(trial["task"]), trial["positive"])
        if not rows:
            continue
        p = np.asarray([r.get("p", np.nan) for r in rows], dtype=float)
        tested = ~np.isnan(p)
        adjusted = np.full(len(rows), np.nan)
        adjusted[tested] = holm(p[tested]) if tested.any() else []
        extra = {"trial_id": trial["trial_id"], "run_name": names.get(trial["trial_id"], trial["trial_id"]),
                 axis: str(trial.get(axis, ""))}
        out += [r | extra | {"p_holm": float(a)} for r, a in zip(rows, adjusted, strict=True)]
        if len(out) >= ROWS_PER_FRAME:
            frames.append(pl.DataFrame(out, infer_schema_length=None))
            out = []
    frames += [pl.DataFrame(out, infer_schema_length=None)] if out else []
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


ROWS_PER_FRAME = 4096  # per_trial's rows held as dicts before they become a frame


def subgroup_table(predictions: Predictions, aurocs: pl.DataFrame, names: dict[str, str],
                   axis: str) -> pl.DataFrame:
    """Every analysed single-label trial's subgroup rows, with Holm over each trial's tests and a verdict."""
    out = per_trial(predictions, aurocs, names, axis, lambda part, task, positive: trial_subgroups(
        part.filter(pl.col("split") == "test"), task.positive_index, positive))
    if out.is_empty():
        return out
    verdict = (pl.when(pl.col("p_holm").is_nan()).then(pl.lit(Gap.TOO_FEW.word))
               .when((pl.col("p_holm") < 0.05) & (pl.col("gap") < 0)).then(pl.lit(Gap.WORSE.word))
               .when(pl.col("p_holm") < 0.05).then(pl.lit(Gap.BETTER.word))
               .otherwise(pl.lit(Gap.NONE.word)))
    out = out.with_columns(verdict.alias("verdict"))
    return out.select("trial_id", "run_name", axis, "attribute", "subgroup", "against", "n", "patients",
                      "patients_pos", "patients_neg", "auroc", "ci_lo", "ci_hi", "auroc_rest", "gap", "gap_lo",
                      "gap_hi", "p", "p_holm", "verdict", "note")


@analysis_step(order=45)
def subgroups(run: LoadedRun) -> Artifacts:
    """AUROC per sex, age band, view and source with the gap to the rest (patients as the unit, Holm per trial)."""
    a = Artifacts()
    if not run.aurocs.height or "positive" not in run.aurocs.columns:
        return a
    table = protocol_sorted(subgroup_table(run.predictions, run.aurocs, run.names, run.rows), run.rows)
    if table.is_empty():
        return a
    a.tables["subgroups"] = table
    gaps = table.filter(pl.col("verdict").is_in([Gap.WORSE.word, Gap.BETTER.word]))
    a.text = (f"\n\nSubgroups: {gaps.height} gap(s) after Holm among {table['p'].is_not_nan().sum()} tested "
              f"subgroup(s) of {table['trial_id'].n_unique()} trial(s) (analysis/subgroups.csv)"
              + "".join(f"\n- {r['run_name']}: {r['attribute']} {r['subgroup']} AUROC {r['auroc']:.3f} vs "
                        f"{r['auroc_rest']:.3f} for {r['against']} (p Holm {r['p_holm']:.3g})"
                        for r in gaps.iter_rows(named=True)) + ".")
    a.sections = [Section("Subgroups: sex, age band, view, source", tables=("subgroups",), verdict="verdict",
                          group="bias", note=(
                              f"AUROC of each subgroup with its 95 % interval (clustered by patient) against the "
                              f"other value of a two-valued attribute (tested once) or the rest of the test set; the "
                              f"gap's CI and p count patients, paired where both sides share patients; Holm over "
                              f"the comparisons of each trial; a comparison needs {MIN_PATIENTS} positive and "
                              f"negative patients on both sides."))]
    return a


def subgroup_oc(patients: int, images: int, icc: float, reps: int, seed: int = 0) -> dict[str, float]:
    """No gap planted: how often the sex comparison (one test, patients as the unit) finds one."""
    rng = np.random.default_rng(seed)
    gaps = tested = 0
    for _ in range(reps):
        y, g, h, _ = draw(rng, Truth(0.8, 0.9, patients, images, icc))
        sex = np.where(rng.random(patients) < 0.5, "F", "M")[g]
        part = pl.DataFrame({"patient_id": g.astype(str), "target": y.astype(int), "prob_CVP": h, "sex": sex,
                             "source": "a"})
        row = next((r for r in trial_subgroups(part, 1, "CVP") if r["attribute"] == "sex"), None)
        if row is not None and row["p"] == row["p"]:
            tested += 1
            gaps += row["p"] < 0.05
    return {"tested": tested / reps, "false_gaps": gaps / tested if tested else float("nan")}
