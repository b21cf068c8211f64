"""The analysis reads a run's predictions from disk by trial (issue 41: 10,000 trials without holding every
trial's predictions): ``StoredPredictions`` and its windows give each trial exactly the rows the held table
gives, whatever the window size and whatever order a step asks in, and every step's tables are the same."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from edge_runs import Edge, write_edge_run

from cxrray.analysis.analyze import ordered_steps
from cxrray.analysis.run import load_run
from cxrray.analysis.steps import AnalysisOptions, LoadedRun
from cxrray.data import trial_rows
from cxrray.data.trial_rows import StoredPredictions, TrialRows, TrialWindow, by_trial, frames
from cxrray.registry import UserError


def _table(tmp_path, pieces: bool):
    """A predictions table of 9 trials of unequal sizes, val and test rows; ``pieces``: one trial's rows in two
    runs, as a hand-concatenated table can have them."""
    rng = np.random.default_rng(3)
    parts = []
    for k in range(9):
        n = int(rng.integers(1, 12))
        parts.append(pl.DataFrame({"trial_id": f"t{k}", "row": np.arange(n), "split": np.where(
            np.arange(n) % 3 == 0, "val", "test"), "score": rng.random(n)}))
    if pieces:
        parts.append(parts[2].with_columns(pl.col("row") + 100))
    frame = pl.concat(parts)
    path = tmp_path / "predictions.parquet"
    frame.write_parquet(path, row_group_size=5)
    return frame, path


@pytest.mark.parametrize("scattered", [0, 32])  # every read by filtering the file by trial, or by slicing it
@pytest.mark.parametrize("pieces", [False, True])
def test_the_store_finds_every_trials_rows_across_batches_and_row_groups(tmp_path, pieces, scattered, monkeypatch):
    monkeypatch.setattr(trial_rows, "SCATTERED", scattered)
    frame, path = _table(tmp_path, pieces)
    store = StoredPredictions.open(path, batch=4)  # runs cross the batch ends
    assert store.trials == tuple(f"t{k}" for k in range(9))
    assert len(store.spans["t2"]) == (2 if pieces else 1)
    held = TrialRows.of(frame)
    for tid in store.trials:
        assert store.read([tid]).equals(held.rows(tid))
        assert store.read([tid], "test").equals(held.rows(tid).filter(pl.col("split") == "test"))
    assert store.read(["t5", "t1"]).equals(frame.filter(pl.col("trial_id").is_in(["t1", "t5"])))  # file order
    assert store.read([]).columns == frame.columns and store.read([]).height == 0


@pytest.mark.parametrize("window", [1, 6, 25, 10_000])
def test_a_window_answers_as_the_held_table_in_any_order_and_reads_once_per_window_along_its_plan(tmp_path, window):
    frame, path = _table(tmp_path, pieces=True)
    store = dataclasses.replace(StoredPredictions.open(path), window_rows=window)
    held = by_trial(frame, [], "test")
    rng = np.random.default_rng(0)
    plan = list(rng.permutation(store.trials)) * 2
    ask = plan + list(rng.permutation(store.trials)) + ["t404"]  # then off the plan, then a trial it lacks
    rows = by_trial(store, plan, "test")
    assert isinstance(rows, TrialWindow)
    for tid in ask:
        assert rows.rows(tid).equals(held.rows(tid)), tid
    assert rows.get("t404") is None and rows.rows("t404").height == 0
    first = by_trial(store, plan, "test")
    for tid in plan[:9]:
        first.get(tid)
    assert first.reads == len(list(store.packed(plan[:9])))  # one read per window along the plan
    whole = pl.concat(list(frames(store, "val")))  # windows of whole trials: each trial's rows in file order
    assert whole.sort("trial_id", maintain_order=True).equals(
        pl.concat(list(frames(frame, "val"))).sort("trial_id", maintain_order=True))
    assert max(f.height for f in store.windows()) <= max(window, max(store.size(t) for t in store.trials))


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    """Three representations x two backbones x two seeds, a dilated trial and a ShorT trial."""
    root = write_edge_run(tmp_path_factory.mktemp("stored"), Edge(
        pos=9, neg=9, images=2, representations=("original", "lungs_removed", "lungs_boxed_out"), seeds=2,
        dilation=True, short=True, backbones=("basecnn", "resnet18"), seed=5))
    return load_run(root, AnalysisOptions(saliency=0, transfer=False))


def _held(run: LoadedRun) -> LoadedRun:
    """The same run with its predictions read into memory whole (what the analysis held before)."""
    assert isinstance(run.predictions, StoredPredictions) and run.dilated is not None
    d = run.dilated.predictions
    assert isinstance(d, StoredPredictions)
    return dataclasses.replace(run, predictions=run.predictions.read(run.predictions.trials),
                               dilated=dataclasses.replace(run.dilated, predictions=d.read(d.trials)))


def _windowed(run: LoadedRun, rows: int) -> LoadedRun:
    assert isinstance(run.predictions, StoredPredictions) and run.dilated is not None
    d = run.dilated.predictions
    assert isinstance(d, StoredPredictions)
    return dataclasses.replace(run, predictions=dataclasses.replace(run.predictions, window_rows=rows),
                               dilated=dataclasses.replace(run.dilated, predictions=dataclasses.replace(
                                   d, window_rows=rows)))


@pytest.mark.parametrize("step", [s for s in ordered_steps() if not s.models], ids=lambda s: s.name)
def test_every_step_makes_the_same_tables_from_the_stored_table_as_from_the_held_one(edge_run, step):
    """A window of one trial (a read per trial) against the table held in memory (every other analysis test
    reads through the default window)."""
    edge_run.layout.analysis.mkdir(parents=True, exist_ok=True)
    made = {name: step.run(run) for name, run in (("held", _held(edge_run)), ("one", _windowed(edge_run, 1)))}
    tables = {**made["held"].tables, **made["held"].detail}
    assert tables or step.name in ("checklist", "demographics", "bias", "shortcut_testing", "transfer")
    for name in ("one",):
        assert set({**made[name].tables, **made[name].detail}) == set(tables)
        for key, frame in tables.items():
            other = {**made[name].tables, **made[name].detail}[key]
            assert other.equals(frame), (step.name, key)
        assert made[name].text == made["held"].text


def test_a_table_gathered_again_during_the_analysis_is_refused_not_read(tmp_path):
    frame, path = _table(tmp_path, pieces=False)
    store = StoredPredictions.open(path)
    assert store.read(["t1"]).height == frame.filter(pl.col("trial_id") == "t1").height
    frame.reverse().write_parquet(path.with_name("new.parquet"))
    path.with_name("new.parquet").replace(path)  # what a resumed sweep's gather does
    with pytest.raises(UserError, match="gathered again while it was being analysed"):
        store.read(["t1"])
