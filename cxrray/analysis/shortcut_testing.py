"""Shortcut testing (ShorT, Brown et al., Nat Commun 2023): does a fairness gap move with how strongly the model
encodes the attribute?

The sweep's ``short_<attribute>_<factor>`` trials (``--methods short_sex``) train the same cell with an attribute
head whose gradient into the backbone is scaled from -1 (hide the attribute) to 1 (encode it); each trial stores
the encoding it ended with (a probe's test AUROC for the attribute, ``TrialRecord.short``). Per trial
the gap is read from its test predictions: the mean positive-class score of the truly positive patients of one
group minus the other's (women minus men; the oldest age band minus the youngest), each patient's images
averaged first. A model that gives sick women lower scores than sick men misses them more at any threshold
(balance for the positive class, Kleinberg et al. 2016).

Per cell (representation, backbone, task, ... and attribute; its factors and seeds are the points): the
least-squares slope of the gap on the encoding, with a t interval on n - 2 degrees of freedom at the Bonferroni
level over the cells tested. The verdict reads that one interval: **no dependence** (inside +/- ``SLOPE_MARGIN``:
an equivalence claim; read first, so that a slope known precisely to be negligible is not called a shortcut),
**gap moves with the encoding** (it excludes 0 and reaches past the margin: the gap rests on the attribute), else
**inconclusive**; fewer than ``MIN_MODELS`` models with an encoding and a gap: **too few models**; encodings that
span less than ``MIN_SPREAD`` or take fewer than 3 values (the factors did not move the encoding, so a slope would
rest on one point): **encoding did not vary**. Step
``shortcut_testing``; ``analysis/shortcut_testing.csv`` (per cell) and ``shortcut_testing_trials.csv``.
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl
from scipy import optimize, stats

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.tasks import TASKS
from cxrray.data.trial_rows import of_trials
from cxrray.plots.steps import plot_short
from cxrray.records import TrialRecord
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num
from cxrray.verdicts.verdict import StepWord, Verdict

SLOPE_MARGIN = 0.2  # |gap change| per unit of encoding AUROC called no dependence (0.1 across AUROC 0.5 -> 1)
MIN_MODELS = 4  # models per cell (factors x seeds) a slope needs
MIN_POSITIVE = 5  # positive patients per group a gap needs
POWER = 0.8  # the power at which a cell's detectable slope is stated
MIN_SPREAD = 0.1  # encodings (probe AUROC) must span this much, over at least 3 distinct values, for a slope
AGE_BANDS = (40, 60, 75)
CELL = ("representation", "backbone", "task", "pretraining", "design", "attribute")


class Slope(StepWord):
    """ShorT's cell verdicts."""

    MOVES = ("gap moves with the encoding", Verdict.SHORTCUT)
    FLAT = ("no dependence", Verdict.NO_SHORTCUT)
    INCONCLUSIVE = ("inconclusive", Verdict.INCONCLUSIVE)
    TOO_FEW = ("too few models", Verdict.DEGENERATE)
    NO_SPREAD = ("encoding did not vary", Verdict.DEGENERATE)
    GROUPS = ("groups too small", Verdict.DEGENERATE)


def groups(part: pl.DataFrame, attribute: str) -> tuple[pl.Expr, pl.Expr, str] | None:
    """(the compared group, the reference group, their names) of an attribute, from the predictions' columns."""
    if attribute == "sex" and "sex" in part.columns:
        sex = pl.col("sex").cast(pl.Utf8)
        return sex == "F", sex == "M", "F - M"
    if attribute == "age_band" and "age" in part.columns:
        age = pl.col("age").cast(pl.Utf8).cast(pl.Float64, strict=False)
        return age >= AGE_BANDS[-1], age < AGE_BANDS[0], f">= {AGE_BANDS[-1]} - < {AGE_BANDS[0]}"
    return None


def balance_gap(part: pl.DataFrame, positive: str, positive_index: int, attribute: str) -> tuple[float, int, int]:
    """(gap, positive patients of the group, of the reference) of one trial's test predictions; NaN gap when a
    group has fewer than ``MIN_POSITIVE`` positive patients."""
    found = groups(part, attribute)
    if found is None:
        return float("nan"), 0, 0
    group, reference, _ = found
    sick = part.filter((pl.col("split") == "test") & (pl.col("target") == positive_index))
    means = []
    for side in (group, reference):
        per_patient = sick.filter(side).group_by("patient_id").agg(pl.col(f"prob_{positive}").mean())
        means.append((num(per_patient[f"prob_{positive}"].mean()) if per_patient.height else np.nan,
                      per_patient.height))
    (a, na), (b, nb) = means
    return (a - b if min(na, nb) >= MIN_POSITIVE else float("nan")), na, nb


def trial_points(run: LoadedRun) -> pl.DataFrame:
    """Per ShorT trial: its cell, attribute, factor, encoding and gap."""
    rows = []
    for t in run.aurocs.iter_rows(named=True):
        if not str(t.get("method", "")).startswith("short_") or t.get("positive") is None:
            continue
        record = TrialRecord.read(run.layout.trial(t["trial_id"]))
        short = record.short
        if short is None:
            continue
        task = TASKS.get(t["task"])
        part = of_trials(run.predictions, [t["trial_id"]])
        gap, na, nb = balance_gap(part, t["positive"], task.positive_index, short.attribute)
        rows.append({c: t[c] for c in CELL if c in t} | {
            "attribute": short.attribute, "trial_id": t["trial_id"], "run_name": record.run_name,
            "factor": short.factor, "seed": t.get("seed", 0), "encoding_auroc": short.encoding_auroc, "gap": gap,
            "patients_group": na, "patients_reference": nb,
            "groups": (groups(part, short.attribute) or (None, None, ""))[2]})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


@functools.lru_cache(maxsize=256)
def _noncentrality(n: int, level: float, power: float) -> float:
    """The noncentral t (n - 2 degrees of freedom) whose upper tail past the critical value at ``level`` is
    ``power``."""
    df, crit = n - 2, stats.t.ppf(0.5 + level / 2, n - 2)
    return float(optimize.brentq(lambda d: stats.nct.sf(crit, df, d) - power, 0.0, crit + 50.0))


def detectable_slope(stderr: float, n: int, level: float, power: float = POWER) -> float:
    """The smallest |slope| that a cell of ``n`` models with this standard error finds ("gap moves") with
    probability ``power`` at ``level``: what an inconclusive cell could have found; more seeds shrink it."""
    return _noncentrality(n, level, power) * stderr


def slope_verdict(x: np.ndarray, y: np.ndarray, level: float) -> dict:
    """OLS slope of ``y`` on ``x`` with its t interval at ``level``, and the verdict it gives."""
    n = len(x)
    out = {"models": n, "level": level}
    spread = len(np.unique(np.round(x, 2))) >= 3 and float(np.ptp(x)) >= MIN_SPREAD if n else False
    if n < MIN_MODELS or not spread:
        return out | {"slope": np.nan, "slope_lo": np.nan, "slope_hi": np.nan, "p": np.nan, "detectable": np.nan,
                      "verdict": (Slope.TOO_FEW if n < MIN_MODELS else Slope.NO_SPREAD).word}
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + level / 2, n - 2) * fit.stderr
    lo, hi = fit.slope - half, fit.slope + half
    verdict = (Slope.FLAT if lo > -SLOPE_MARGIN and hi < SLOPE_MARGIN else
               Slope.MOVES if lo > 0 or hi < 0 else Slope.INCONCLUSIVE).word
    return out | {"slope": float(fit.slope), "slope_lo": float(lo), "slope_hi": float(hi),
                  "p": float(fit.pvalue), "detectable": detectable_slope(float(fit.stderr), n, level),
                  "encoding_min": float(x.min()), "encoding_max": float(x.max()),
                  "verdict": verdict}


def cell_table(points: pl.DataFrame, alpha: float = 0.05) -> pl.DataFrame:
    """One row per cell: the slope of the gap on the encoding, its interval (Bonferroni over cells), verdict."""
    cell = [c for c in CELL if c in points.columns]
    usable = pl.col("gap").is_not_nan() & pl.col("encoding_auroc").is_not_nan()
    cells = [(key, c, c.filter(usable)) for key, c in points.group_by(cell, maintain_order=True)]
    m = max(sum(1 for _, _, c in cells if c.height >= MIN_MODELS), 1)
    rows = [dict(zip(cell, key, strict=True))
            | (slope_verdict(c["encoding_auroc"].to_numpy(), c["gap"].to_numpy(), 1 - alpha / m)
                                    if c.height else too_small(every)) for key, every, c in cells]
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def too_small(points: pl.DataFrame) -> dict:
    """A cell whose trials trained but none has a gap: each group needs ``MIN_POSITIVE`` positive test patients
    (the test split's smallest counts are said, so that the row names why the cell has no slope)."""
    return {"models": points.height, "level": np.nan, "slope": np.nan, "slope_lo": np.nan, "slope_hi": np.nan,
            "p": np.nan, "detectable": np.nan, "verdict": Slope.GROUPS.word,
            "why": f"fewer than {MIN_POSITIVE} positive test patients in a group ({points['groups'][0] or 'groups'}: "
                   f"{int(num(points['patients_group'].min()))} and {int(num(points['patients_reference'].min()))})"}


@analysis_step(order=47)
def shortcut_testing(run: LoadedRun) -> Artifacts:
    """ShorT: per cell, the slope of the fairness gap on the attribute's encoding across the gradient factors."""
    a = Artifacts()
    points = trial_points(run) if "method" in run.aurocs.columns else pl.DataFrame()
    if points.is_empty():
        return a
    cells = cell_table(points, run.options.rules.alpha)
    a.detail = {"shortcut_testing_trials": points}
    if cells.is_empty():
        return a
    a.tables["shortcut_testing"] = cells
    plot_short(points, cells, run.figure("shortcut_testing"), [c for c in CELL if c in cells.columns], POWER)
    a.figures["shortcut_testing"] = ("each ShorT model's gap against its encoding of the attribute (labels: the "
                                     "gradient factor), the least-squares line; colour: the cell's verdict")
    lines = [f"- {r['representation']} / {r['backbone']} / {r['attribute']}: {r['verdict']}: slope "
             + (f"{r['slope']:.2f} [{r['slope_lo']:.2f}, {r['slope_hi']:.2f}] ({100 * r['level']:.1f} % interval, "
                f"{r['models']} models)" if r["slope"] == r["slope"] else f"- ({r['models']} models)")
             + (f"; not estimated: {r['why']}" if r.get("why") else "")
             + (f"; these models find only |slope| >= {r['detectable']:.2f} with {POWER:.0%} power: more seeds "
                f"narrow it" if r["verdict"] == Slope.INCONCLUSIVE.word else "")
             for r in cells.iter_rows(named=True)]
    a.text = (f"\n\nShortcut testing (ShorT: the gap in mean score of the sick between groups against the attribute's "
              f"encoding; no dependence = slope inside +/- {SLOPE_MARGIN}):\n" + "\n".join(lines))
    a.sections = [Section("Shortcut testing (ShorT)", tables=("shortcut_testing",), figures=("shortcut_testing",),
                          verdict="verdict", group="bias", note=(
                              f"per cell, the least-squares slope of the gap (the sick of one group's mean score "
                              f"minus the other's) on the attribute's encoding across the gradient factors, its t "
                              f"interval at the Bonferroni level over cells; no dependence = inside +/- "
                              f"{SLOPE_MARGIN} per unit of encoding AUROC"))]
    return a
