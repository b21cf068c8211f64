"""A model-based step's results per trial, computed once and reused by every later analysis of the run.

Saliency (with its sanity checks) and the transfer matrix cost seconds to minutes per trial; without a cache a
resumed or extended sweep would recompute them for every trial at every analysis. ``TrialCache`` keeps each trial's
result under ``cache/analysis/<step>/`` (outside ``analysis/``, which every analysis rewrites), keyed by the
trial id (its spec and data), the bytes of its outputs (``trial_content``: a retrained trial or a replaced model
is a new entry), the step's options and the step's ``version`` (raised when its computation changes). A result
is a table and, optionally, named arrays (what the step's figures draw); both are written aside and renamed, so
an interrupted write is never read.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cxrray.config import RunLayout, TrialDir
from cxrray.models.card import CARD
from cxrray.records import TrialRecord


def trial_content(trial: TrialDir) -> tuple[str, str]:
    """Digests of the bytes that define a trial's result: (its record, predictions and card; its weights, every
    ``*.pt`` but the epoch checkpoint, '' when none is left). Bytes, not a time stamp: a replaced ``model.pt``
    with the old finish time in ``trial.json`` is scored again."""
    weights = sorted(p for p in trial.path.glob("*.pt") if p != trial.resume)  # not the epoch checkpoint
    return _digests([trial.meta, trial.predictions, trial.path / CARD]), _digests(weights) if weights else ""


def _digests(files: list[Path]) -> str:
    return hashlib.sha256("".join(f"{p.name}:{_digest(p)};" for p in files if p.is_file()).encode()).hexdigest()


def _digest(path: Path) -> str:
    """blake2b of a file's bytes, remembered in this process by (path, inode, size, mtime, ctime: a write or a
    time stamp put back moves the ctime): every step of one analysis asks for the same models."""
    st = path.stat()
    return _file_digest(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:32]


@dataclass(frozen=True)
class TrialCache:
    """The cache of one step (``step``, ``version``) under one set of options (``options``)."""

    layout: RunLayout
    step: str
    version: int
    options: Mapping[str, Any]

    def _stem(self, trial_id: str) -> tuple[Path, str] | None:
        """(The entry's path without suffix, the digest of the trial's weights); None without the trial's record
        (nothing to key it by). The entry is keyed by the record, predictions and card; the weights it was
        computed from are written beside it (``.weights``) and must match the ones on disk, if any is left."""
        trial = self.layout.trial(trial_id)
        try:
            TrialRecord.read(trial)
            content, weights = trial_content(trial)
        except (OSError, ValueError, KeyError):
            return None
        key = json.dumps({"v": self.version, "content": content, **self.options}, sort_keys=True, default=str)
        name = f"{trial_id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        return self.layout.analysis_cache(self.step) / name, weights

    def get(self, trial_id: str) -> tuple[pl.DataFrame, dict[str, np.ndarray]] | None:
        """The trial's stored (table, arrays), or None when it has none for these options and these weights (a
        trial whose weights were deleted to save space keeps the results of the weights last there)."""
        found = self._stem(trial_id)
        if found is None:
            return None
        stem, weights = found
        table, arrays = stem.with_suffix(".parquet"), stem.with_suffix(".npz")
        if not table.exists():
            return None
        made_from = stem.with_suffix(".weights")
        if weights and (not made_from.exists() or made_from.read_text() != weights):
            return None
        with np.load(arrays, allow_pickle=False) as z:
            return pl.read_parquet(table), {k: z[k] for k in z.files}

    def put(self, trial_id: str, table: pl.DataFrame, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Store the trial's result; the table is renamed into place last (it marks a complete entry)."""
        found = self._stem(trial_id)
        if found is None:
            return
        stem, weights = found
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".parquet").unlink(missing_ok=True)  # the entry is incomplete until its table is back
        stem.with_suffix(".weights").write_text(weights)
        buf = io.BytesIO()
        named: dict[str, Any] = {k: np.asarray(v) for k, v in (arrays or {}).items()}  # (numpy types **kwds)
        np.savez_compressed(buf, **named)
        part = stem.with_suffix(".npz.partial")
        part.write_bytes(buf.getvalue())
        part.rename(stem.with_suffix(".npz"))
        table.write_parquet(stem.with_suffix(".parquet.partial"))
        stem.with_suffix(".parquet.partial").rename(stem.with_suffix(".parquet"))
