"""The manifest: one row per image, the contract between datasets and the sweep.

Columns (paths relative to the manifest file)::

    image_path, mask_path, patient_id, source, label, severity, view, sex, age

``mask_path`` and ``severity`` may be empty. Labels use the class codes of
Hasan et al.: NOR normal, CVP COVID-19 pneumonia, OVP other viral, OBP other
bacterial; plus PNA (pneumonia, type unknown) and OTH (abnormal, not
pneumonia) for collections that do not say more. Optional ``finding_<Name>``
columns (1 / 0 / empty = unknown) carry multilabel targets (ChestX-ray14).
An optional ``split`` column (train/val/test) fixes the split; a non-empty
``mask_rejected`` (written by the CheXmask adapter) sends the row to quarantine with that reason.
Errors name the manifest file and the 1-based data row (header = line 1).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import polars as pl

from cxrray.registry import UserError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "image_path", "mask_path", "patient_id", "source", "label",
    "severity", "view", "sex", "age",
)
# Carried from the manifest into every trial's per-image predictions: what the analyses group by (patients,
# sources, severity, and the subgroups: view, sex, age).
CARRIED_COLUMNS: tuple[str, ...] = ("row", "patient_id", "source", "label", "severity", "view", "sex", "age")
LABELS: tuple[str, ...] = ("NOR", "CVP", "OVP", "OBP")  # the class codes of Hasan et al.
# Codes for collections that do not grade pneumonia type (RSNA, ChestX-ray14):
# PNA = pneumonia of unknown type, OTH = abnormal but not pneumonia.
EXTRA_LABELS: tuple[str, ...] = ("PNA", "OTH")
ALL_LABELS: tuple[str, ...] = LABELS + EXTRA_LABELS
SEVERITIES: tuple[str, ...] = ("", "none", "Normal-PCR+", "Mild", "Moderate", "Severe")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# The checked vocabularies of the columns an analysis groups by: each spelling (case, spaces, '_' and '-' aside)
# -> its one value. Anything else is quarantined with its value and row: a numeric code such as 1 or 2 means
# female in one collection and male in another, and an unmapped 'female' would count as a sex group of its own.
SEXES: dict[str, str] = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M",
                         "o": "O", "other": "O", "x": "O", "non binary": "O", "nonbinary": "O",
                         "": "", "u": "", "unk": "", "unknown": "", "na": "", "n/a": "", "not recorded": ""}
VIEWS: dict[str, str] = {"pa": "PA", "ap": "AP", "ap erect": "AP", "ap supine": "AP SUPINE", "supine ap": "AP SUPINE",
                         "ap horizontal": "AP SUPINE", "frontal": "FRONTAL", "lateral": "LATERAL", "lat": "LATERAL",
                         "ll": "LATERAL", "rl": "LATERAL", "l": "LATERAL", "": ""}
AGE_RANGE = (0.0, 120.0)  # years; a plausible age of a patient
AGE_BANDS = ((0, 40, "<40"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, "80+"))  # subgroups, probes


class ManifestError(UserError):
    """A manifest problem; the message names the file and, where known, the row."""


def _read_table(path: Path, data: bytes) -> pl.DataFrame:
    """The file's bytes (read once) as a table."""
    if path.suffix == ".parquet":
        return pl.read_parquet(io.BytesIO(data))
    # Every column as text: ages or ids must not be guessed into other types.
    return pl.read_csv(data, infer_schema=False)


def _check_text(path: Path, data: bytes) -> None:
    """A CSV manifest must be UTF-8 text (a BOM is fine): say where it is not, instead of garbling its paths."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ManifestError(f"{path}: UTF-16 text; save the manifest as UTF-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ManifestError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save the "
                            f"manifest as UTF-8") from None
    if b"\0" in data:
        raise ManifestError(f"{path}: not a text file (it holds NUL bytes; UTF-16 or binary?); save the manifest "
                            f"as UTF-8 CSV or parquet")


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
    if path.is_dir():
        raise ManifestError(f"{path}: is a directory; give the manifest file itself (CSV or parquet), whose "
                            f"image paths are relative to its folder")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if path.suffix != ".parquet":
        _check_text(path, data)
    try:
        df = _read_table(path, data)
    except Exception as exc:  # noqa: BLE001  (polars raises several error types, with multi-line messages)
        raise ManifestError(f"{path}: cannot be read as a table: {' '.join(str(exc).split())}") from None
    doubled = [c.rsplit("_duplicated_", 1)[0] for c in df.columns
               if "_duplicated_" in c and c.rsplit("_duplicated_", 1)[0] in df.columns]
    if doubled:
        raise ManifestError(f"{path}: column {doubled[0]!r} appears more than once in the header; keep one (which "
                            f"copy is meant cannot be guessed)")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {missing}; found {df.columns}; "
            f"required: {list(REQUIRED_COLUMNS)}"
        )
    df = df.with_columns(
        [pl.col(c).cast(pl.Utf8).fill_null("").str.strip_chars() for c in REQUIRED_COLUMNS]
    ).with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    base = path.parent
    unresolvable: dict[str, str] = {}  # path text -> why it cannot be resolved (a symlink loop, a name too long)

    def absolute(p: str) -> str:
        if not p:
            return ""
        try:
            return str((base / p).resolve())
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            unresolvable[str(base / p)] = f"{type(exc).__name__}: {exc}"
            return str(base / p)

    # Resolved (``..``, ``.``, symbolic links) before the duplicate check: one file, one path text.
    df = df.with_columns(
        pl.col("image_path").map_elements(absolute, return_dtype=pl.Utf8),
        pl.col("mask_path").map_elements(absolute, return_dtype=pl.Utf8),
    )
    df = df.with_columns(_row_problems(df, path, unresolvable).alias("_reason"))
    df = df.with_columns(_vocabulary("sex", SEXES), _vocabulary("view", VIEWS), _sources(df["source"]))
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


def _row_problems(df: pl.DataFrame, path: Path, unresolvable: dict[str, str] | None = None) -> pl.Series:
    """One reason per row ('' = fine); the first problem found wins."""
    age = df["age"]
    dup_of = df.with_columns(pl.col("row").min().over("image_path").alias("first"))["first"]
    bad_paths = unresolvable or {}
    checks = [
        (df["image_path"] == "", lambda r: "empty image_path"),
        (df["image_path"].is_in(list(bad_paths)) | df["mask_path"].is_in(list(bad_paths)),
         lambda r: f"unreadable path {r['image_path'] if r['image_path'] in bad_paths else r['mask_path']} "
                   f"({bad_paths.get(r['image_path']) or bad_paths.get(r['mask_path'])})"),
        (df["patient_id"] == "", lambda r: "empty patient_id"),
        (~df["label"].is_in(ALL_LABELS), lambda r: f"unknown label {r['label']!r} (valid: {list(ALL_LABELS)})"),
        (~df["severity"].is_in(SEVERITIES),
         lambda r: f"unknown severity {r['severity']!r} (valid: {list(SEVERITIES[1:])})"),
        ((age != "") & age.cast(pl.Float64, strict=False).is_null(), lambda r: f"non-numeric age {r['age']!r}"),
        ((age != "") & ~age.cast(pl.Float64, strict=False).is_between(*AGE_RANGE).fill_null(True),
         lambda r: f"implausible age {r['age']!r} (years, {AGE_RANGE[0]:g} to {AGE_RANGE[1]:g})"),
        (~df.select(_spelling("sex"))["sex"].is_in(list(SEXES)),
         lambda r: f"unknown sex {r['sex']!r} (valid: F / female, M / male, O / other, empty or U / unknown; a "
                   f"numeric code means female in one collection and male in another)"),
        (~df.select(_spelling("view"))["view"].is_in(list(VIEWS)),
         lambda r: f"unknown view {r['view']!r} (valid: PA, AP, AP supine, frontal, lateral, or empty)"),
        ((dup_of != df["row"]) & (df["image_path"] != ""), None),
    ]
    if "split" in df.columns:
        checks.append((~df["split"].is_in(SPLITS), lambda r: f"unknown split {r['split']!r} (valid: {list(SPLITS)})"))
    if "mask_rejected" in df.columns:  # a mask rejected where it was made (CheXmask below its quality threshold)
        rejected = df["mask_rejected"].cast(pl.Utf8).fill_null("").str.strip_chars()
        checks.append((rejected != "", lambda r: f"mask rejected: {r['mask_rejected']}"))
    reasons = [""] * df.height
    for mask, describe in checks:
        for i in mask.arg_true().to_list():
            if not reasons[i]:
                r = df.row(i, named=True)
                what = describe(r) if describe else f"duplicate of row {dup_of[i]} (the same file {r['image_path']})"
                reasons[i] = f"{path}, row {r['row']}: {what}"
    return pl.Series(reasons, dtype=pl.Utf8)


def _spelling(column: str) -> pl.Expr:
    return pl.col(column).str.to_lowercase().str.replace_all(r"[_\-\s]+", " ").str.strip_chars()


def _vocabulary(column: str, words: dict[str, str]) -> pl.Expr:
    """``column`` as its vocabulary's values (a row outside it is quarantined by ``_row_problems`` first)."""
    return _spelling(column).replace_strict(words, default=pl.col(column), return_dtype=pl.Utf8).alias(column)


def _sources(source: pl.Series) -> pl.Series:
    """Spellings of one source that differ only in case or surrounding spaces are one source, named as first
    written (without the spaces)."""
    first: dict[str, str] = {}
    for value in source.to_list():
        first.setdefault(value.strip().lower(), value.strip())
    return source.str.strip_chars().str.to_lowercase().replace_strict(first, return_dtype=pl.Utf8)


def manifest_fingerprint(df: pl.DataFrame) -> str:
    """Hash of the rows (file names, labels, patients, splits): the manifest's part of the data id (the files'
    bytes are the other part, digested at ingest).

    File names rather than absolute paths, so moving the data does not orphan a run.
    """
    cols = [c for c in (*REQUIRED_COLUMNS, "split") if c in df.columns]
    table = df.select(cols).with_columns(
        pl.col("image_path").str.split("/").list.last(),
        pl.col("mask_path").str.split("/").list.last(),
    )
    return hashlib.sha256(table.write_csv().encode()).hexdigest()[:12]


def files_fingerprint(df: pl.DataFrame, threads: int = 16) -> str:
    """Size and modification time of every image and mask file (one ``stat`` each, in a thread pool): the shard
    cache's key, so a repaired or replaced file is ingested again, never silently reused. A missing file counts
    as missing (so it is retried once it appears)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    def stat(p: str) -> str:
        if not p:
            return ""
        try:
            st = os.stat(p)
        except OSError:
            return "missing"
        return f"{st.st_size}:{st.st_mtime_ns}"

    paths = [p for pair in zip(df["image_path"].to_list(), df["mask_path"].to_list(), strict=True) for p in pair]
    with ThreadPoolExecutor(threads) as pool:
        stats = list(pool.map(stat, paths, chunksize=256))
    h = hashlib.sha256()
    for p, st in zip(paths, stats, strict=True):
        h.update(f"{p}={st};".encode())
    return h.hexdigest()[:16]


def age_band(age: pl.Series) -> pl.Series:
    """Age in years -> band (``AGE_BANDS``); empty or non-numeric -> ''."""
    years = age.cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False)
    out = pl.Series([""] * len(age), dtype=pl.Utf8)
    for lo, hi, name in AGE_BANDS:
        out = pl.select(pl.when((years >= lo) & (years < hi)).then(pl.lit(name)).otherwise(out)).to_series()
    return out
