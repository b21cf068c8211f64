"""``TrialRows``: each trial's rows as one filter would give them, in their order, from one sort of the table."""

import numpy as np
import polars as pl

from cxrray.data.trial_rows import TrialRows


def _predictions(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    return pl.DataFrame({"trial_id": rng.choice(["t3", "t1", "t20", "t2"], n).tolist(),
                         "row": rng.permutation(n), "prob": rng.random(n).astype(np.float32)})


def test_each_trial_gets_exactly_the_rows_a_filter_gives_in_the_same_order():
    frame = _predictions()
    rows = TrialRows.of(frame)
    assert sorted(rows.spans) == ["t1", "t2", "t20", "t3"]
    for tid in ("t1", "t2", "t3", "t20"):
        want = frame.filter(pl.col("trial_id") == tid)
        assert rows.get(tid).equals(want)  # values and order (rows in their table order, not re-sorted)
        assert rows.rows(tid).equals(want)
    assert list(rows.spans) == ["t1", "t2", "t20", "t3"]  # in pieces: sorted by trial, each trial's rows adjacent
    assert sum(n for _, n in rows.spans.values()) == frame.height


def test_a_trial_without_rows_is_none_or_an_empty_frame_of_the_columns():
    rows = TrialRows.of(_predictions())
    assert rows.get("t9") is None
    assert rows.rows("t9").is_empty() and rows.rows("t9").columns == ["trial_id", "row", "prob"]
    empty = TrialRows.of(_predictions().clear())
    assert empty.spans == {} and empty.rows("t1").is_empty()


def test_a_table_whose_trials_are_already_adjacent_is_used_as_it_is():
    """A gathered predictions table holds each trial's rows together, in the order the trials finished: no sort,
    no copy (10,000 trials: the table is not held twice)."""
    frame = _predictions().sort("trial_id", descending=True, maintain_order=True)  # t3, t20, t2, t1
    rows = TrialRows.of(frame)
    assert rows.frame is frame and list(rows.spans) == ["t3", "t20", "t2", "t1"]
    for tid in ("t1", "t2", "t3", "t20"):
        assert rows.get(tid).equals(frame.filter(pl.col("trial_id") == tid))
