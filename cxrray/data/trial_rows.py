"""A predictions table's rows by trial: each trial's rows on demand, without a frame per trial held.

The analysis reads many trials' predictions one trial at a time. A filter per trial is quadratic (minutes at
10,000 trials) and ``partition_by(as_dict=True)`` holds a frame per trial (about 15 KB each: 150 MiB at 10,000
tiny trials). ``TrialRows`` finds each trial's run of rows (sorting the table once when a trial's rows are not
adjacent) and hands out each trial's rows as a zero-copy slice.

A run's gathered table stays on disk (``StoredPredictions``): a step reads it a window of whole trials at a time
(``frames``), or trial by trial along the order it will visit them (``by_trial``), so the analysis holds one
window of rows however many trials the run has. Every helper takes a frame too (tests, a few trials).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from cxrray.registry import UserError


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


WINDOW_ROWS = 16_384  # rows of a stored table read at once (about 4 MiB of tiny-trial rows; a larger trial alone)
SCATTERED = 32  # row ranges in one read above which it filters the file by trial instead of slicing it


@dataclass(frozen=True)
class StoredPredictions:
    """A run's gathered predictions left in their parquet file and read by trial, a window of rows at a time: the
    analysis of 10,000 trials holds one window, never the table. ``spans``: where each trial's rows lie in the file
    (found once, reading the ``trial_id`` column in batches); ``trials``: the trials this view stands for (the
    analysis' undilated trials, or the dilation axis'), in file order; ``signature``: the file's inode, size and
    modification time when it was opened (a table gathered again meanwhile would put other rows at those
    places: it is refused, never read)."""

    path: Path
    spans: Mapping[str, tuple[tuple[int, int], ...]]
    trials: tuple[str, ...]
    signature: tuple[int, int, int]
    window_rows: int = WINDOW_ROWS

    @classmethod
    def open(cls, path: Path, window_rows: int = WINDOW_ROWS, batch: int = 1 << 18) -> StoredPredictions:
        """Every trial of the file at ``path``, with where its rows lie."""
        import pyarrow.parquet as pq

        runs: dict[str, list[tuple[int, int]]] = {}
        at = 0
        signature = _signature(path)
        with pq.ParquetFile(path) as file:
            for part in file.iter_batches(columns=["trial_id"], batch_size=batch):
                found = pl.DataFrame(pl.from_arrow(part)).select(pl.col("trial_id").rle()).unnest("trial_id")
                for n, tid in found.select("len", "value").iter_rows():
                    runs.setdefault(tid, []).append((at, n))
                    at += n
        # (a run that goes on past a batch's end is one range)
        return cls(path, {t: _coalesced(r) for t, r in runs.items()}, tuple(runs), signature, window_rows)

    def only(self, trials: Iterable[str]) -> StoredPredictions:
        """The view of ``trials`` only (file order kept)."""
        keep = set(trials)
        return replace(self, trials=tuple(t for t in self.trials if t in keep))

    def with_trials(self, other: StoredPredictions) -> StoredPredictions:
        """This view's and ``other``'s trials (views of one file) together, in file order."""
        if other.path != self.path:
            raise ValueError(f"{other.path}: not {self.path}")
        both = {*self.trials, *other.trials}
        return replace(self, trials=tuple(t for t in self.spans if t in both))

    def size(self, trial_id: str) -> int:
        return sum(n for _, n in self.spans.get(trial_id, ()))

    def read(self, trials: Iterable[str], split: str | None = None) -> pl.DataFrame:
        """The rows of ``trials`` in file order (of ``split`` only, when given): the row ranges read, adjacent
        ranges as one."""
        ids = list(dict.fromkeys(trials))
        ranges = _coalesced(sorted(r for t in ids for r in self.spans.get(t, ())))
        if _signature(self.path) != self.signature:
            raise UserError(f"{self.path}: gathered again while it was being analysed (a sweep resumed?); run the "
                            f"analysis again once the sweep has finished")
        scan = pl.scan_parquet(self.path)
        if len(ranges) > SCATTERED:  # trials strewn over the file: one pass that keeps theirs beats many slices
            frame = scan.filter(pl.col("trial_id").is_in(ids))
        else:
            frame = pl.concat([scan.slice(s, n) for s, n in ranges]) if ranges else scan.head(0)
        return (frame.filter(pl.col("split") == split) if split else frame).collect()

    def packed(self, order: Iterable[str]) -> Iterator[list[str]]:
        """``order``'s trials (each once) in windows of at most ``window_rows`` rows (a larger trial alone)."""
        window: list[str] = []
        rows = 0
        seen: set[str] = set()
        for tid in order:
            if tid in seen or tid not in self.spans:
                continue
            seen.add(tid)
            n = self.size(tid)
            if window and rows + n > self.window_rows:
                yield window
                window, rows = [], 0
            window.append(tid)
            rows += n
        if window:
            yield window

    def windows(self, split: str | None = None) -> Iterator[pl.DataFrame]:
        """This view's rows (of ``split``), a window of whole trials at a time, in file order."""
        for window in self.packed(self.trials):
            yield self.read(window, split)


def _coalesced(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted (start, length) row ranges with each range that ends where the next starts joined to it."""
    out: list[tuple[int, int]] = []
    for start, n in ranges:
        if out and sum(out[-1]) == start:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((start, n))
    return tuple(out)


def _signature(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class TrialWindow:
    """A stored table's rows by trial, for a step that visits its trials in a known order (``plan``; repeats
    allowed): asked for a trial it does not hold, it reads the window of the plan that starts there. The answers
    are ``TrialRows``' (each trial's rows in file order); the plan only decides how often the file is read."""

    def __init__(self, store: StoredPredictions, plan: Iterable[str], split: str | None) -> None:
        self.store, self.split, self.plan = store, split, list(plan)
        self.where: dict[str, list[int]] = {}
        for k, tid in enumerate(self.plan):
            self.where.setdefault(tid, []).append(k)
        self.at = 0
        self.held = TrialRows.of(store.read((), split))
        self.loaded: frozenset[str] = frozenset()
        self.reads = 0

    def get(self, trial_id: str) -> pl.DataFrame | None:
        """The trial's rows, None when the table has none."""
        if trial_id not in self.loaded:
            spots = self.where.get(trial_id, [])
            k = bisect.bisect_left(spots, self.at)
            start = spots[k] if k < len(spots) else spots[0] if spots else None
            if start is None:
                window = [trial_id]
            else:
                window = next(self.store.packed(self.plan[start:]), [trial_id])
                self.at = start
            self.held = TrialRows.of(self.store.read(window, self.split))
            self.loaded = frozenset(window) | {trial_id}
            self.reads += 1
        return self.held.get(trial_id)

    def rows(self, trial_id: str) -> pl.DataFrame:
        """The trial's rows; an empty frame of the table's columns when it has none."""
        part = self.get(trial_id)
        return self.held.frame.clear() if part is None else part


Predictions = pl.DataFrame | StoredPredictions  # a frame (tests, a few trials) or the run's stored table
ByTrial = TrialRows | TrialWindow


def by_trial(predictions: Predictions, plan: Iterable[str], split: str | None = "test") -> ByTrial:
    """Each trial's rows (of ``split``) on demand: a frame grouped once, or a store read along ``plan``, the
    order in which the step will ask for its trials."""
    if isinstance(predictions, StoredPredictions):
        return TrialWindow(predictions, plan, split)
    return TrialRows.of(predictions.filter(pl.col("split") == split) if split else predictions)


def frames(predictions: Predictions, split: str | None = "test") -> Iterator[pl.DataFrame]:
    """The table's rows (of ``split``): a frame as one piece, a store a window of whole trials at a time."""
    if isinstance(predictions, StoredPredictions):
        yield from predictions.windows(split)
    else:
        yield predictions.filter(pl.col("split") == split) if split else predictions


def trial_groups(predictions: Predictions, split: str | None = "test"
                 ) -> Iterator[tuple[tuple[object, ...], pl.DataFrame]]:
    """Each trial's rows (of ``split``) as ``group_by`` hands them, in table order, a window read at a time."""
    for frame in frames(predictions, split):
        yield from frame.group_by("trial_id", maintain_order=True)


def of_trials(predictions: Predictions, trials: Iterable[str], split: str | None = None) -> pl.DataFrame:
    """The rows of a few trials (of ``split``) as one frame, in table order."""
    ids = list(trials)
    if isinstance(predictions, StoredPredictions):
        return predictions.read(ids, split)
    keep = pl.col("trial_id").is_in(ids)
    return predictions.filter(keep & (pl.col("split") == split) if split else keep)


def restricted(predictions: Predictions, trials: Iterable[str]) -> Predictions:
    """The table of ``trials`` only."""
    if isinstance(predictions, StoredPredictions):
        return predictions.only(trials)
    return predictions.filter(pl.col("trial_id").is_in(list(trials)))


def combined(first: Predictions, second: Predictions) -> Predictions:
    """Two views' trials together (the undilated and the dilated trials of a run)."""
    if isinstance(first, StoredPredictions) and isinstance(second, StoredPredictions):
        return first.with_trials(second)
    as_frame = [p if isinstance(p, pl.DataFrame) else p.read(p.trials) for p in (first, second)]
    return pl.concat(as_frame, how="diagonal_relaxed")
