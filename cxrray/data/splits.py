"""Patient-level train/val/test splits, stratified by label, and a leakage check.

Splits are always by patient: every image of a patient lands in one split.
A manifest that already has a ``split`` column keeps it (after the check).
"""

from __future__ import annotations

import numpy as np
import polars as pl


class LeakageError(ValueError):
    """A patient appears in more than one split."""


def assign_splits(df: pl.DataFrame, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                  seed: int = 0) -> pl.DataFrame:
    """Add a ``split`` column (train/val/test) by patient, stratified by the patient's label.

    Within each label the patients are shuffled with ``seed`` and cut by the
    cumulative fractions, so every split gets every label when there are enough
    patients. An existing ``split`` column is kept and only checked.
    """
    if "split" in df.columns:
        check_no_leakage(df)
        return df
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    patients = (df.group_by("patient_id").agg(pl.col("label").mode().first().alias("plabel"))
                .sort("patient_id"))
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(patients["plabel"].unique().to_list()):
        ids = patients.filter(pl.col("plabel") == label)["patient_id"].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        cuts = np.round(np.cumsum(fractions)[:2] * len(ids)).astype(int)
        for name, part in zip(("train", "val", "test"), np.split(ids, cuts)):
            assignment.update(dict.fromkeys(part.tolist(), name))
    out = df.with_columns(pl.col("patient_id").replace_strict(assignment).alias("split"))
    check_no_leakage(out)
    return out


def check_no_leakage(df: pl.DataFrame) -> None:
    """Raise ``LeakageError`` naming the patients (and rows) found in more than one split."""
    per = df.group_by("patient_id").agg(pl.col("split").n_unique().alias("n"), pl.col("split").unique(),
                                         pl.col("row") if "row" in df.columns else pl.len())
    bad = per.filter(pl.col("n") > 1).sort("patient_id")
    if bad.height:
        examples = "; ".join(
            f"{r['patient_id']} in {sorted(r['split'])}" + (f" (rows {r['row'][:6]})" if "row" in r else "")
            for r in bad.head(5).iter_rows(named=True)
        )
        raise LeakageError(f"{bad.height} patient(s) appear in more than one split: {examples}")
