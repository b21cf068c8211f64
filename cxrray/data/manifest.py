"""The manifest: one row per image, the contract between datasets and the sweep.

Columns (paths relative to the manifest file)::

    image_path, mask_path, patient_id, source, label, severity, view, sex, age

``mask_path`` and ``severity`` may be empty. Labels use the class codes of
Hasan et al.: NOR normal, CVP COVID-19 pneumonia, OVP other viral, OBP other
bacterial; plus PNA (pneumonia, type unknown) and OTH (abnormal, not
pneumonia) for collections that do not say more. Optional ``finding_<Name>``
columns (1 / 0 / empty = unknown) carry multilabel targets (ChestX-ray14).
An optional ``split`` column (train/val/test) fixes the split.
Errors name the manifest file and the 1-based data row (header = line 1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from cxrray.registry import UserError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "image_path", "mask_path", "patient_id", "source", "label",
    "severity", "view", "sex", "age",
)
LABELS: tuple[str, ...] = ("NOR", "CVP", "OVP", "OBP")  # the class codes of Hasan et al.
# Codes for collections that do not grade pneumonia type (RSNA, ChestX-ray14):
# PNA = pneumonia of unknown type, OTH = abnormal but not pneumonia.
EXTRA_LABELS: tuple[str, ...] = ("PNA", "OTH")
ALL_LABELS: tuple[str, ...] = LABELS + EXTRA_LABELS
SEVERITIES: tuple[str, ...] = ("", "none", "Normal-PCR+", "Mild", "Moderate", "Severe")
SPLITS: tuple[str, ...] = ("train", "val", "test")


class ManifestError(UserError):
    """A manifest problem; the message names the file and, where known, the row."""


def _read_table(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    # Every column as text: ages or ids must not be guessed into other types.
    return pl.read_csv(path, infer_schema=False)


QUARANTINE_SCHEMA = {"row": pl.Int64, "image_path": pl.Utf8, "reason": pl.Utf8}


def read_manifest(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read a manifest leniently: ``(rows, quarantine)``.

    Problems with the *table* (missing file, unreadable, missing columns) raise
    ``ManifestError`` at once, before any compute is spent. Problems with a
    *row* (unknown label, empty patient, duplicate image, bad age ...) put that
    row in ``quarantine`` (row, image_path, reason naming the file and row)
    and every other row goes on. Paths become absolute; ``row`` is the 1-based
    data row in the file, kept through every later stage.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    try:
        df = _read_table(path)
    except Exception as exc:  # polars raises several error types
        raise ManifestError(f"{path}: cannot be read as a table: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {missing}; found {df.columns}; "
            f"required: {list(REQUIRED_COLUMNS)}"
        )
    df = df.with_columns(
        [pl.col(c).cast(pl.Utf8).fill_null("").str.strip_chars() for c in REQUIRED_COLUMNS]
    ).with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    reason = _row_problems(df, path)
    base = path.parent
    absolute = lambda p: "" if not p else str((base / p).resolve())  # noqa: E731
    df = df.with_columns(
        pl.col("image_path").map_elements(absolute, return_dtype=pl.Utf8),
        pl.col("mask_path").map_elements(absolute, return_dtype=pl.Utf8),
        reason.alias("_reason"),
    )
    quarantine = df.filter(pl.col("_reason") != "").select("row", "image_path", pl.col("_reason").alias("reason"))
    return df.filter(pl.col("_reason") == "").drop("_reason"), quarantine


def load_manifest(path: str | Path) -> pl.DataFrame:
    """Read a manifest strictly: any quarantined row is an error naming the file and row."""
    rows, quarantine = read_manifest(path)
    if quarantine.height:
        first = quarantine.row(0, named=True)
        more = f" ({quarantine.height} rows in all)" if quarantine.height > 1 else ""
        raise ManifestError(first["reason"] + more)
    return rows


def _row_problems(df: pl.DataFrame, path: Path) -> pl.Series:
    """One reason per row ('' = fine); the first problem found wins."""
    age = df["age"]
    dup_of = df.with_columns(pl.col("row").min().over("image_path").alias("first"))["first"]
    checks = [
        (df["image_path"] == "", lambda r: "empty image_path"),
        (df["patient_id"] == "", lambda r: "empty patient_id"),
        (~df["label"].is_in(ALL_LABELS), lambda r: f"unknown label {r['label']!r} (valid: {list(ALL_LABELS)})"),
        (~df["severity"].is_in(SEVERITIES),
         lambda r: f"unknown severity {r['severity']!r} (valid: {list(SEVERITIES[1:])})"),
        ((age != "") & age.cast(pl.Float64, strict=False).is_null(), lambda r: f"non-numeric age {r['age']!r}"),
        ((dup_of != df["row"]) & (df["image_path"] != ""), None),
    ]
    if "split" in df.columns:
        checks.append((~df["split"].is_in(SPLITS), lambda r: f"unknown split {r['split']!r} (valid: {list(SPLITS)})"))
    reasons = [""] * df.height
    for mask, describe in checks:
        for i in mask.arg_true().to_list():
            if not reasons[i]:
                r = df.row(i, named=True)
                what = describe(r) if describe else f"duplicate of row {dup_of[i]} (same image_path)"
                reasons[i] = f"{path}, row {r['row']}: {what}"
    return pl.Series(reasons, dtype=pl.Utf8)


def manifest_fingerprint(df: pl.DataFrame) -> str:
    """Content hash of the rows (file names, labels, patients, splits): part of every trial id.

    File names rather than absolute paths, so moving the data does not orphan a run.
    """
    cols = [c for c in (*REQUIRED_COLUMNS, "split") if c in df.columns]
    table = df.select(cols).with_columns(
        pl.col("image_path").str.split("/").list.last(),
        pl.col("mask_path").str.split("/").list.last(),
    )
    return hashlib.sha256(table.write_csv().encode()).hexdigest()[:12]
