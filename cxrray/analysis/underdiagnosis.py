"""Underdiagnosis per subgroup: at the operating threshold, are the sick of one sex, age band, view or source
missed more often than the rest?

Seyyed-Kalantari et al. (Nature Medicine 2021) found CXR classifiers underdiagnose women, young, Black and
low-income patients: a gap in the false-negative rate (FNR: positive images called negative) at the threshold a
deployment would use, where an AUROC gap can hide. Per analysed single-label trial:

- the threshold is chosen on the validation split (Youden's J, the point of the ROC curve farthest above
  chance), never on test;
- per subgroup (the attributes of ``subgroups``): the FNR among its positive test images, with a Wilson interval
  whose size is the patients' effective number (images of one patient are not independent);
- the gap against the other value of a two-valued attribute (tested once) or the rest: the difference of the two
  FNRs, its variance from the patients' influence on both (paired where a patient is on both sides), never below
  its value under no gap, a t interval and p on ``min(positive patients) - 1`` degrees of freedom (one variance
  for both, so the interval and the verdict agree); Holm over each trial's comparisons, as for the subgroup
  AUROCs. A side needs ``MIN_POSITIVE`` positive patients.

Step ``underdiagnosis``; ``analysis/underdiagnosis.csv``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats
from sklearn.metrics import roc_curve

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.analysis.subgroups import attribute_values, per_trial
from cxrray.data.trial_rows import Predictions
from cxrray.plots.palette import protocol_sorted
from cxrray.report.page import Artifacts, Section
from cxrray.verdicts.verdict import StepWord, Verdict

MIN_POSITIVE = 10  # positive patients each side of a comparison needs


class Missed(StepWord):
    """The underdiagnosis step's verdicts (the same words as the subgroups' where they mean the same)."""

    MORE = ("underdiagnosed", Verdict.SHORTCUT)
    LESS = ("missed less often", Verdict.INCONCLUSIVE)
    NONE = ("no gap found", Verdict.NO_SHORTCUT)
    TOO_FEW = ("too few to test", Verdict.DEGENERATE)


def youden_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The score threshold (positive when score >= it) that maximises sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y, s)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def wilson(rate: float, n_eff: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion at an effective sample size."""
    if n_eff <= 0:
        return (np.nan, np.nan)
    z = stats.norm.ppf(0.5 + level / 2)
    centre = (rate + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z * np.sqrt(rate * (1 - rate) / n_eff + z * z / (4 * n_eff * n_eff)) / (1 + z * z / n_eff)
    return (0.0 if rate <= 0 else max(0.0, centre - half), 1.0 if rate >= 1 else min(1.0, centre + half))


def _sums(values: np.ndarray, patient: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(patient[mask], weights=values[mask].astype(float), minlength=n)


def fnr_interval(missed: np.ndarray, patient: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, int]:
    """(FNR, lo, hi, positive patients) of the positive images in ``mask`` (``missed``: called negative)."""
    n = int(patient.max()) + 1 if len(patient) else 0
    a, m = _sums(missed, patient, mask, n), _sums(np.ones_like(missed), patient, mask, n)
    keep = m > 0
    k = int(keep.sum())
    if k == 0:
        return (np.nan, np.nan, np.nan, 0)
    rate = float(a.sum() / m.sum())
    var = k / max(k - 1, 1) * float((((a - rate * m) / m.sum()) ** 2)[keep].sum())
    n_eff = rate * (1 - rate) / var if var > 0 and 0 < rate < 1 else k
    lo, hi = wilson(rate, min(n_eff, float(m.sum())))
    return (rate, lo, hi, k)


def fnr_gap(missed: np.ndarray, patient: np.ndarray, inside: np.ndarray, rest: np.ndarray,
            level: float = 0.95) -> tuple[float, float, float, float]:
    """(gap, lo, hi, p): FNR inside minus FNR of the rest, patients as the unit (see the module)."""
    n = int(patient.max()) + 1
    one = np.ones_like(missed)
    a_in, m_in = _sums(missed, patient, inside, n), _sums(one, patient, inside, n)
    a_out, m_out = _sums(missed, patient, rest, n), _sums(one, patient, rest, n)
    f_in, f_out = a_in.sum() / m_in.sum(), a_out.sum() / m_out.sum()
    pooled = (a_in.sum() + a_out.sum()) / (m_in.sum() + m_out.sum())
    keep = (m_in + m_out) > 0
    k = int(keep.sum())

    def variance(p_in: float, p_out: float) -> float:
        infl = (a_in - p_in * m_in) / m_in.sum() - (a_out - p_out * m_out) / m_out.sum()
        return k / max(k - 1, 1) * float((infl[keep] ** 2).sum())

    var = max(variance(f_in, f_out), variance(pooled, pooled))
    gap = float(f_in - f_out)
    df = max(min(int((m_in > 0).sum()), int((m_out > 0).sum())) - 1, 1)
    if var <= 0:  # every patient's images called alike on both sides, and no gap
        return (gap, gap, gap, 1.0)
    se = np.sqrt(var)
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return (gap, gap - half, gap + half, float(2 * stats.t.sf(abs(gap) / se, df)))


def trial_underdiagnosis(val: pl.DataFrame, test: pl.DataFrame, positive_index: int, positive: str) -> list[dict]:
    """Rows of one trial: the validation threshold, then per comparison FNR [CI] inside and out, the gap."""
    y_val = (val["target"] == positive_index).to_numpy()
    if y_val.all() or not y_val.any():
        return []
    threshold = youden_threshold(y_val, val[f"prob_{positive}"].cast(pl.Float64).to_numpy())
    pos = test.filter(pl.col("target") == positive_index)
    if pos.is_empty():
        return []
    missed = (pos[f"prob_{positive}"].cast(pl.Float64).to_numpy() < threshold)
    _, patient = np.unique(pos["patient_id"].cast(pl.Utf8).to_numpy(), return_inverse=True)
    rows = []
    for attribute, values in attribute_values(pos).items():
        v = values.to_numpy()
        levels = sorted(x for x in set(v) if x)
        if len(levels) < 2:
            continue
        for level in levels[:1] if len(levels) == 2 else levels:
            inside, rest = v == level, (v != level) & (v != "")
            against = levels[1] if len(levels) == 2 else "rest"
            fnr, lo, hi, k_in = fnr_interval(missed, patient, inside)
            fnr_rest, _, _, k_out = fnr_interval(missed, patient, rest)
            row = {"attribute": attribute, "subgroup": level, "against": against, "threshold": threshold,
                   "positives": int(inside.sum()), "patients_pos": k_in, "fnr": fnr, "fnr_lo": lo, "fnr_hi": hi,
                   "fnr_rest": fnr_rest}
            if min(k_in, k_out) < MIN_POSITIVE:
                rows.append(row | {"gap": np.nan, "gap_lo": np.nan, "gap_hi": np.nan, "p": np.nan,
                                   "note": f"fewer than {MIN_POSITIVE} positive patients (here or in {against})"})
                continue
            gap, glo, ghi, p = fnr_gap(missed, patient, inside, rest)
            rows.append(row | {"gap": gap, "gap_lo": glo, "gap_hi": ghi, "p": p, "note": ""})
    return rows


def underdiagnosis_table(predictions: Predictions, aurocs: pl.DataFrame, names: dict[str, str],
                         axis: str) -> pl.DataFrame:
    """Every analysed single-label trial's rows, Holm over each trial's comparisons, and a verdict."""
    out = per_trial(predictions, aurocs, names, axis, lambda part, task, positive: trial_underdiagnosis(
        part.filter(pl.col("split") == "val"), part.filter(pl.col("split") == "test"), task.positive_index, positive))
    if out.is_empty():
        return out
    verdict = (pl.when(pl.col("p_holm").is_nan()).then(pl.lit(Missed.TOO_FEW.word))
               .when((pl.col("p_holm") < 0.05) & (pl.col("gap") > 0)).then(pl.lit(Missed.MORE.word))
               .when(pl.col("p_holm") < 0.05).then(pl.lit(Missed.LESS.word))
               .otherwise(pl.lit(Missed.NONE.word)))
    return out.with_columns(verdict.alias("verdict")).select(
        "trial_id", "run_name", axis, "attribute", "subgroup", "against", "threshold", "positives", "patients_pos",
        "fnr", "fnr_lo", "fnr_hi", "fnr_rest", "gap", "gap_lo", "gap_hi", "p", "p_holm", "verdict", "note")


@analysis_step(order=46)
def underdiagnosis(run: LoadedRun) -> Artifacts:
    """False-negative rate per sex, age band, view and source at the validation threshold, and the gap to the rest."""
    a = Artifacts()
    if not run.aurocs.height or "positive" not in run.aurocs.columns:
        return a
    table = protocol_sorted(underdiagnosis_table(run.predictions, run.aurocs, run.names, run.rows), run.rows)
    if table.is_empty():
        return a
    a.tables["underdiagnosis"] = table
    under = table.filter(pl.col("verdict") == Missed.MORE.word)
    a.text = (f"\n\nUnderdiagnosis: {under.height} subgroup(s) missed more often after Holm among "
              f"{table['p'].is_not_nan().sum()} tested of {table['trial_id'].n_unique()} trial(s) (false-negative "
              f"rate at the validation threshold; analysis/underdiagnosis.csv)"
              + "".join(f"\n- {r['run_name']}: {r['attribute']} {r['subgroup']} FNR {r['fnr']:.2f} "
                        f"[{r['fnr_lo']:.2f}, {r['fnr_hi']:.2f}] vs {r['fnr_rest']:.2f} for {r['against']} "
                        f"(gap {r['gap']:+.2f} [{r['gap_lo']:+.2f}, {r['gap_hi']:+.2f}], p Holm {r['p_holm']:.3g})"
                        for r in under.iter_rows(named=True)) + ".")
    a.sections = [Section("Underdiagnosis: false-negative rate per subgroup", tables=("underdiagnosis",),
                          verdict="verdict", group="bias", note=(
                              "the share of positive test images called negative at the threshold chosen on "
                              "validation (Youden's J), per subgroup with a Wilson interval on the patients' "
                              "effective number; the gap to the other value (two-valued attributes, tested once) "
                              "or the rest, patients as the unit, Holm per trial; a side needs "
                              f"{MIN_POSITIVE} positive patients"))]
    return a
