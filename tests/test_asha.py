"""ASHA stops weak hyper-parameter settings, compared only within their protocol cell."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from cxrray.config import TrainRecipe, TrialSpec
from cxrray.tuning.asha import EarlyStop, cell_scheduler, experiments, protocol_cell
from cxrray.tuning.study import expand_search, parse_search

ROOT = Path(__file__).resolve().parents[1]
LRS = ["lr=0.1,0.01,0.001,0.0001"]


def _specs() -> list[TrialSpec]:
    base = [TrialSpec(study="s", data_id="d", representation=r, backbone="basecnn", recipe=TrainRecipe(epochs=4))
            for r in ("original", "lungs_removed")]
    return expand_search(base, parse_search(LRS))


def _drive(specs, curves):
    """Feed each trial's per-epoch validation AUROC to the scheduler, trial after trial (one at a time,
    as on a small machine); returns the epochs each trial ran and the trials the driver marked stopped."""
    from ray.tune.schedulers import TrialScheduler

    stopped = []
    sched = cell_scheduler(specs, EarlyStop(("lr",), 1, 2.0), lambda t: t.spec, lambda s, r: stopped.append(s))
    ran = {}
    for spec, curve in zip(specs, curves, strict=True):
        trial = SimpleNamespace(trial_id=spec.trial_id, spec=spec)
        sched.on_trial_add(None, trial)
        for epoch, auroc in enumerate(curve, start=1):
            ran[spec.trial_id] = epoch
            action = sched.on_trial_result(None, trial, {"epochs_done": epoch, "val_auroc": auroc})
            if action == TrialScheduler.STOP:
                break
        sched.on_trial_complete(None, trial, {"epochs_done": ran[spec.trial_id], "val_auroc": curve[-1]})
    return ran, stopped


def test_protocol_cell_ignores_only_the_searched_axes():
    specs = _specs()
    cells = {protocol_cell(s, ("lr",)) for s in specs}
    assert len(cells) == 2  # two representations, four learning rates each
    assert len({protocol_cell(s, ()) for s in specs}) == 8  # with nothing searched every spec is its own cell


def test_asha_compares_settings_only_within_a_cell():
    """Cell 'original' learns well, cell 'lungs_removed' poorly. A global ASHA would stop every
    lungs_removed setting against the original cell's records; per cell, its best setting finishes."""
    specs = _specs()  # original x 4 lr, then lungs_removed x 4 lr
    good = [[0.9, 0.92, 0.93, 0.94], [0.8, 0.85, 0.86, 0.87], [0.95, 0.96, 0.97, 0.98], [0.7, 0.7, 0.7, 0.7]]
    poor = [[0.55, 0.56, 0.57, 0.58], [0.5, 0.5, 0.5, 0.5], [0.60, 0.62, 0.63, 0.64], [0.52, 0.52, 0.52, 0.52]]
    ran, stopped = _drive(specs, good + poor)
    epochs = [ran[s.trial_id] for s in specs]
    assert epochs[0] == 4 and epochs[4] == 4  # the first setting of each cell has no rival yet
    assert epochs[2] == 4 and epochs[6] == 4  # the best setting of each cell finishes
    assert epochs[1] < 4 and epochs[3] < 4 and epochs[5] < 4  # weaker than a recorded rival at a rung: stopped
    assert {s.trial_id for s in stopped} == {s.trial_id for s, e in zip(specs, epochs, strict=True) if e < 4}
    for cell in ("original", "lungs_removed"):  # every protocol cell keeps at least one finished setting
        assert any(e == 4 for s, e in zip(specs, epochs, strict=True) if s.representation == cell)


def test_last_epoch_never_stops():
    """A setting that reached its last epoch finishes (its test predictions cost almost nothing)."""
    specs = _specs()[:2]
    ran, stopped = _drive(specs, [[0.9, 0.9, 0.9, 0.9], [0.95, 0.95, 0.95, 0.1]])
    assert ran[specs[1].trial_id] == 4 and not stopped


def test_experiments_hold_at_most_size_trials_and_never_cut_a_cell_under_asha():
    specs = _specs()  # two cells (representations) x four learning rates, cell by cell
    assert experiments(specs, 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]  # no ASHA: cut anywhere, order kept
    assert experiments(specs, 1000) == [list(range(8))]
    early = EarlyStop(("lr",))
    assert experiments(specs, 3, early) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a cell of 4 stays whole
    assert experiments(specs, 8, early) == [list(range(8))]
    shuffled = [specs[i] for i in (0, 4, 1, 5, 2, 6, 3, 7)]  # cells interleaved: grouped, each cell whole
    assert experiments(shuffled, 4, early) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    with pytest.raises(ValueError, match="at least one trial"):
        experiments(specs, 0)


def test_asha_needs_search_axes_and_inline_trials(tmp_path):
    with pytest.raises(ValueError, match="--search"):
        EarlyStop(())
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    for extra, message in ((["--asha"], "--search"), (["--asha", "--search", "lr=0.1,0.01", "--num-workers", "2"],
                                                       "inline")):
        proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--out",
                               str(tmp_path / "r"), *extra], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "r" / "ray").exists()  # rejected before Ray starts


@pytest.mark.slow  # about 65 s; make test-all (CI keeps the per-cell scheduler's unit tests)
def test_asha_sweep_stops_settings_and_resume_keeps_them_stopped(tmp_path):
    """A real sweep: one cell, four learning rates, ASHA on; stopped settings have no predictions, are
    reported as stopped (not failed, exit 0), and a rerun trains nothing."""
    args = [sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--representations", "original",
            "--search", "lr=0.3,0.03,0.003,0.0003", "--asha", "--epochs", "4", "--wandb", "disabled",
            "--out", str(tmp_path), "--max-concurrent", "1"]  # one at a time: a later setting meets a full rung
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pl.read_parquet(tmp_path / "results.parquet")
    status = results["status"].to_list()
    stopped = [s for s in status if s.startswith("stopped by ASHA")]
    assert stopped and "finished" in status and len(stopped) + status.count("finished") == 4
    for row in results.iter_rows(named=True):
        trial = tmp_path / "trials" / row["trial_id"]
        assert (trial / "predictions.parquet").exists() == (row["status"] == "finished")
        assert row["run_name"].startswith("original.basecnn.none.s0.lr=")
    assert "stopped early (ASHA)" in proc.stdout and "more stopped early by ASHA" in proc.stdout
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert rerun.returncode == 0 and "4 trials: 4 already finished, 0 to run" in rerun.stdout
