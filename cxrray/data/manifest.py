"""The manifest: one row per image, the contract between datasets and the sweep.

Columns (paths relative to the manifest file)::

    image_path, mask_path, patient_id, source, label, severity, view, sex, age

``mask_path`` and ``severity`` may be empty. Labels use the class codes of
Hasan et al.: NOR normal, CVP COVID-19 pneumonia, OVP other viral, OBP other
bacterial. An optional ``split`` column (train/val/test) fixes the split.
Errors name the manifest file and the 1-based data row (header = line 1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

REQUIRED_COLUMNS: tuple[str, ...] = (
    "image_path", "mask_path", "patient_id", "source", "label",
    "severity", "view", "sex", "age",
)
LABELS: tuple[str, ...] = ("NOR", "CVP", "OVP", "OBP")
SEVERITIES: tuple[str, ...] = ("", "none", "Normal-PCR+", "Mild", "Moderate", "Severe")
SPLITS: tuple[str, ...] = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest problem; the message names the file and, where known, the row."""


def _read_table(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    # Every column as text: ages or ids must not be guessed into other types.
    return pl.read_csv(path, infer_schema=False)


def load_manifest(path: str | Path) -> pl.DataFrame:
    """Read and validate a manifest; return it with absolute paths and a ``row`` column.

    ``row`` is the 1-based data row in the file, kept through every later stage
    so that any error can point back at it.
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
        [pl.col(c).cast(pl.Utf8).fill_null("") for c in REQUIRED_COLUMNS]
    ).with_row_index("row", offset=1)
    _check_values(df, path)
    base = path.parent
    absolute = lambda p: "" if not p else str((base / p).resolve())  # noqa: E731
    return df.with_columns(
        pl.col("image_path").map_elements(absolute, return_dtype=pl.Utf8),
        pl.col("mask_path").map_elements(absolute, return_dtype=pl.Utf8),
        pl.col("row").cast(pl.Int64),
    )


def _check_values(df: pl.DataFrame, path: Path) -> None:
    def first_bad(mask: pl.Series, what: str, col: str) -> None:
        if mask.any():
            bad = df.filter(mask).row(0, named=True)
            n = int(mask.sum())
            raise ManifestError(
                f"{path}, row {bad['row']}: {what} {col}={bad[col]!r}"
                f"{f' ({n} rows in all)' if n > 1 else ''}"
            )

    first_bad(df["image_path"] == "", "empty", "image_path")
    first_bad(df["patient_id"] == "", "empty", "patient_id")
    first_bad(~df["label"].is_in(LABELS), f"unknown label (valid: {list(LABELS)})", "label")
    first_bad(~df["severity"].is_in(SEVERITIES), f"unknown severity (valid: {list(SEVERITIES[1:])})", "severity")
    if "split" in df.columns:
        first_bad(~df["split"].is_in(SPLITS), f"unknown split (valid: {list(SPLITS)})", "split")
    age = df["age"].str.strip_chars()
    bad_age = (age != "") & age.cast(pl.Float64, strict=False).is_null()
    first_bad(bad_age, "non-numeric", "age")


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
