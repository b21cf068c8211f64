"""A model-based step's results per trial, computed once and reused by every later analysis of the run.

Saliency (with its sanity checks) and the transfer matrix cost seconds to minutes per trial; a resumed or
extended sweep used to recompute them for every trial at every analysis. ``TrialCache`` keeps each trial's
result under ``cache/analysis/<step>/`` (outside ``analysis/``, which every analysis rewrites), keyed by the
trial id (its spec and data), the time its outputs were written (a retrained trial is a new entry), the step's
options and the step's ``version`` (raised when its computation changes). A result is a table and, optionally,
named arrays (what the step's figures draw); both are written aside and renamed, so an interrupted write is
never read.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cxrray.config import RunLayout
from cxrray.records import TrialRecord


@dataclass(frozen=True)
class TrialCache:
    """The cache of one step (``step``, ``version``) under one set of options (``options``)."""

    layout: RunLayout
    step: str
    version: int
    options: Mapping[str, Any]

    def _stem(self, trial_id: str) -> Path | None:
        """The entry's path without suffix; None without the trial's record (nothing to key it by)."""
        try:
            written = TrialRecord.read(self.layout.trial(trial_id)).finished
        except (OSError, ValueError, KeyError):
            return None
        key = json.dumps({"v": self.version, "written": written, **self.options}, sort_keys=True, default=str)
        return self.layout.analysis_cache(self.step) / f"{trial_id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def get(self, trial_id: str) -> tuple[pl.DataFrame, dict[str, np.ndarray]] | None:
        """The trial's stored (table, arrays), or None when it has none for these options."""
        stem = self._stem(trial_id)
        if stem is None:
            return None
        table, arrays = stem.with_suffix(".parquet"), stem.with_suffix(".npz")
        if not table.exists():
            return None
        with np.load(arrays, allow_pickle=False) as z:
            return pl.read_parquet(table), {k: z[k] for k in z.files}

    def put(self, trial_id: str, table: pl.DataFrame, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Store the trial's result; the table is renamed into place last (it marks a complete entry)."""
        stem = self._stem(trial_id)
        if stem is None:
            return
        stem.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in (arrays or {}).items()})
        part = stem.with_suffix(".npz.partial")
        part.write_bytes(buf.getvalue())
        part.rename(stem.with_suffix(".npz"))
        table.write_parquet(stem.with_suffix(".parquet.partial"))
        stem.with_suffix(".parquet.partial").rename(stem.with_suffix(".parquet"))
