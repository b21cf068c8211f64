"""Adapter registry and the shared manifest writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from cxrray.data.manifest import REQUIRED_COLUMNS, ManifestError, read_manifest
from cxrray.registry import Registry, UserError

Adapter = Callable[..., pl.DataFrame]
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")


class AdapterError(UserError):
    """The collection's files are not in the layout the adapter documents (a user error: one line, exit 2)."""


def require(path: Path, what: str) -> Path:
    """Return ``path`` or raise naming the file the layout needs."""
    if not path.exists():
        raise AdapterError(f"{path}: not found ({what})")
    return path


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    """Manifest rows -> DataFrame with every required column as text, extras after them."""
    df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema={c: pl.Utf8 for c in
                                                                                        REQUIRED_COLUMNS})
    for c in REQUIRED_COLUMNS:
        if c not in df.columns:
            df = df.with_columns(pl.lit("").alias(c))
    extras = [c for c in df.columns if c not in REQUIRED_COLUMNS]
    return df.select([pl.col(c).cast(pl.Utf8).fill_null("") for c in (*REQUIRED_COLUMNS, *extras)])


def write_manifest(df: pl.DataFrame, root: Path, name: str = "cxrray_manifest.csv") -> Path:
    """Write ``df`` next to the data and check it loads as a manifest: every row valid, except rows whose mask
    was rejected where it was made (CheXmask's quality threshold), which the sweep quarantines by design."""
    path = Path(root) / name
    df.write_csv(path)
    _, quarantine = read_manifest(path)
    wrong = quarantine.filter(~pl.col("reason").str.contains(": mask rejected: ", literal=True))
    if wrong.height:
        more = f" ({wrong.height} rows in all)" if wrong.height > 1 else ""
        raise ManifestError(wrong["reason"][0] + more)
    return path


def convert(name: str, root: str | Path, **options) -> Path:
    """Run adapter ``name`` on ``root`` and write the manifest there."""
    return write_manifest(ADAPTERS.get(name)(Path(root), **options), Path(root))
