"""A predictions table's rows by trial: each trial's rows on demand, without a frame per trial held.

The analysis reads many trials' predictions one trial at a time. A filter per trial is quadratic (minutes at
10,000 trials) and ``partition_by(as_dict=True)`` holds a frame per trial (about 15 KB each: 150 MiB at 10,000
tiny trials). ``TrialRows`` finds each trial's run of rows (sorting the table once when a trial's rows are not
adjacent) and hands out each trial's rows as a zero-copy slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class TrialRows:
    """``frame`` with each trial's rows adjacent (in their original order) and where each trial's rows start and
    how many there are."""

    frame: pl.DataFrame
    spans: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, frame: pl.DataFrame) -> TrialRows:
        """Group ``frame`` (a predictions table with a ``trial_id`` column) by trial. A table whose trials' rows
        are already adjacent (a gathered ``predictions.parquet``, and any filter of it) is used as it is: no
        copy."""
        runs = frame.select(pl.col("trial_id").rle()).unnest("trial_id")  # columns len, value
        ordered = frame
        if runs["value"].n_unique() < runs.height:  # a trial in pieces: sort, stable (its rows keep their order)
            ordered = frame.sort("trial_id", maintain_order=True)
            runs = ordered.select(pl.col("trial_id").rle()).unnest("trial_id")
        sizes = runs["len"].to_numpy()
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
        return cls(ordered, {tid: (int(s), int(n)) for tid, s, n in zip(runs["value"], starts, sizes, strict=True)})

    def get(self, trial_id: str) -> pl.DataFrame | None:
        """The trial's rows (a view of the sorted table), None when the table has none."""
        span = self.spans.get(trial_id)
        return None if span is None else self.frame.slice(*span)

    def rows(self, trial_id: str) -> pl.DataFrame:
        """The trial's rows; an empty frame of the table's columns when it has none."""
        part = self.get(trial_id)
        return self.frame.clear() if part is None else part
