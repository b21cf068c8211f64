"""A trial is a function of its spec (issue 30 item 5): the same spec gives the same model and predictions
whatever ran before it in the process (a reused Tune actor trains trial after trial), a resumed trial ends where
an uninterrupted one does even with dropout, and a trial leaves the caller's global RNG as it found it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from test_fucitnet import _Dataset, _Session
from test_short import _sex_columns

from cxrray.config import DataRef, TrainRecipe, TrialContext, TrialSpec
from cxrray.training.worker import run_trial


def _run(tmp_path, method: str, backbone: str, **session_kw) -> tuple[np.ndarray, _Session]:
    cols = _sex_columns(n=50, size=64)
    idx = np.arange(len(cols["row"]))
    parts = {"train": idx % 5 < 3, "val": idx % 5 == 3, "test": idx % 5 == 4}
    datasets = {s: _Dataset({k: v[m] for k, v in cols.items()}) for s, m in parts.items()}
    spec = TrialSpec(study="hide_seek", data_id="d", representation="original", backbone=backbone, image_size=64,
                     recipe=TrainRecipe(epochs=2, batch_size=10, lr=1e-3), method=method, seed=3)
    ctx = TrialContext(spec=spec, run_dir=str(tmp_path), data=DataRef("d", "", (1.0, 1.0)), wandb="disabled",
                       project="t", checkpoint_every_s=0.0)
    session = _Session(datasets, **session_kw)
    try:
        run_trial(ctx, session)
    except RuntimeError as e:
        assert "worker lost" in str(e)
        return np.array([]), session
    pred = pl.read_parquet(tmp_path / "trials" / spec.trial_id / "predictions.parquet").sort("split", "row")
    return pred["prob_CVP"].to_numpy(), session


@pytest.mark.parametrize(("method", "backbone"), [("standard", "covid_cxnet"), ("short_sex_1", "basecnn"),
                                                  ("short_sex_-1", "basecnn")])
def test_the_same_spec_gives_the_same_predictions_whatever_ran_before(tmp_path, method, backbone):
    """covid_cxnet has dropout (the global RNG in training); ShorT adds an attribute head after the backbone's seeded
    build. Before the fix the two runs differed (a reused actor's RNG state seeded them)."""
    torch.manual_seed(11)
    first, _ = _run(tmp_path / "a", method, backbone)
    torch.manual_seed(12345)
    torch.rand(1000)  # another trial drew from the process's RNG in between
    state = torch.random.get_rng_state()
    second, _ = _run(tmp_path / "b", method, backbone)
    assert torch.equal(torch.random.get_rng_state(), state)  # the trial left the caller's RNG alone
    assert len(first) == 20 and np.array_equal(first, second)
    assert np.ptp(first) > 0  # the model's scores vary: the comparison is of a model that trained


def test_a_resumed_trial_with_dropout_ends_where_an_uninterrupted_one_does(tmp_path):
    whole, _ = _run(tmp_path / "a", "standard", "covid_cxnet")
    _, crashed = _run(tmp_path / "b", "standard", "covid_cxnet", stop_after=0)
    torch.manual_seed(99)  # the retry runs in a fresh process with another RNG state
    resumed, retry = _run(tmp_path / "b", "standard", "covid_cxnet", state=crashed.state)
    assert [r["epoch"] for r in retry.reports] == [1]
    assert np.array_equal(whole, resumed)
