"""A predictions table's rows by trial: each trial's rows on demand, without a frame per trial held.

The analysis reads many trials' predictions one trial at a time. A filter per trial is quadratic (minutes at
10,000 trials) and ``partition_by(as_dict=True)`` holds a frame per trial (about 15 KB each: 150 MiB at 10,000
tiny trials). ``TrialRows`` sorts the table by trial once and hands out each trial's rows as a zero-copy slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class TrialRows:
    """``frame`` sorted by ``trial_id`` (each trial's rows in their original order) and where each trial's rows
    start and how many there are."""

    frame: pl.DataFrame
    spans: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, frame: pl.DataFrame) -> TrialRows:
        """Group ``frame`` (a predictions table with a ``trial_id`` column) by trial."""
        ordered = frame.sort("trial_id", maintain_order=True)  # stable: a trial's rows keep their order
        counts = ordered.group_by("trial_id", maintain_order=True).len()
        sizes = counts["len"].to_numpy()
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
        return cls(ordered, {tid: (int(s), int(n)) for tid, s, n in zip(counts["trial_id"], starts, sizes,
                                                                           strict=True)})

    def get(self, trial_id: str) -> pl.DataFrame | None:
        """The trial's rows (a view of the sorted table), None when the table has none."""
        span = self.spans.get(trial_id)
        return None if span is None else self.frame.slice(*span)

    def rows(self, trial_id: str) -> pl.DataFrame:
        """The trial's rows; an empty frame of the table's columns when it has none."""
        part = self.get(trial_id)
        return self.frame.clear() if part is None else part
