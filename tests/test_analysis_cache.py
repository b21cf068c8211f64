"""The per-trial analysis cache follows the bytes of a trial's outputs (issue 42, item 4): a replaced
``model.pt`` (the same finish time in ``trial.json``) used to reuse the transfer row of the model it replaced."""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from cxrray.config import RunLayout, TrialSpec
from cxrray.explain.cache import TrialCache
from cxrray.records import TrialRecord


def _trial(tmp_path):
    layout = RunLayout(tmp_path / "run")
    spec = TrialSpec(study="s", data_id="d", representation="original", backbone="basecnn")
    trial = layout.trial(spec.trial_id)
    trial.path.mkdir(parents=True)
    TrialRecord(spec, "random", 1, 0.9, finished=1234.0).write(trial)
    pl.DataFrame({"row": [1, 2], "prob_CVP": [0.2, 0.7]}).write_parquet(trial.predictions)
    trial.model.write_bytes(b"weights one")
    return layout, spec.trial_id, trial


def test_an_entry_is_reused_for_the_same_bytes_and_recomputed_for_new_ones(tmp_path):
    layout, tid, trial = _trial(tmp_path)
    cache = TrialCache(layout, "transfer", 2, {"patients": 1000})
    cache.put(tid, pl.DataFrame({"auroc": [0.908]}), {"curve": np.arange(3)})
    table, arrays = cache.get(tid)
    assert table["auroc"].to_list() == [0.908] and arrays["curve"].tolist() == [0, 1, 2]
    stamp = trial.model.stat().st_mtime_ns
    trial.model.write_bytes(b"weights two")  # replaced, time stamps put back: only the bytes differ
    os.utime(trial.model, ns=(stamp, stamp))
    assert cache.get(tid) is None
    cache.put(tid, pl.DataFrame({"auroc": [0.988]}))
    assert cache.get(tid)[0]["auroc"].to_list() == [0.988]
    trial.model.unlink()  # weights deleted to save space: the results of the weights last there
    assert cache.get(tid)[0]["auroc"].to_list() == [0.988]
    pl.DataFrame({"row": [1, 2], "prob_CVP": [0.3, 0.7]}).write_parquet(trial.predictions)  # retrained
    assert cache.get(tid) is None
    assert TrialCache(layout, "transfer", 3, {"patients": 1000}).get(tid) is None  # a new step version


def test_a_method_weights_file_and_the_card_are_part_of_the_key(tmp_path):
    layout, tid, trial = _trial(tmp_path)
    cache = TrialCache(layout, "saliency", 1, {})
    trial.file("fucitnet.pt").write_bytes(b"a")
    cache.put(tid, pl.DataFrame({"x": [1]}))
    trial.file("resume.pt").write_bytes(b"an epoch checkpoint")  # not a result: the entry stands
    assert cache.get(tid) is not None
    trial.file("fucitnet.pt").write_bytes(b"b")
    assert cache.get(tid) is None
    cache.put(tid, pl.DataFrame({"x": [2]}))
    (trial.path / "model.json").write_text('{"backbone": "resnet18"}')  # an edited card
    assert cache.get(tid) is None
