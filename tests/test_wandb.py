"""W&B as a user reads it, from the offline run files: the per-trial summary holds the kept (selected) epoch's
values and the test AUROC with its DeLong CI; history holds every epoch exactly once, also across a crash and a
resume from an older checkpoint; one summary run per run directory."""

import json

import numpy as np
import pytest
from test_fucitnet import _columns, _Dataset, _Session
from wandb_records import read_run

from cxrray.config import DataRef, TrainRecipe, TrialContext, TrialSpec
from cxrray.studies.finish import summary_id
from cxrray.training.worker import run_trial


class _OldCheckpoint(_Session):
    """Keeps the checkpoint of epoch ``keep`` only: a crash after a later epoch resumes from an older one."""

    def __init__(self, datasets, keep, **kw):
        super().__init__(datasets, **kw)
        self.keep = keep

    def report(self, metrics, state):
        super().report(metrics, state if metrics["epoch"] <= self.keep else None)


def _context(tmp_path, phantom_manifest, epochs):
    cols = _columns(phantom_manifest)
    idx = np.arange(len(cols["row"]))
    parts = {"train": idx % 5 < 3, "val": idx % 5 == 3, "test": idx % 5 == 4}
    datasets = {s: _Dataset({k: v[m] for k, v in cols.items()}) for s, m in parts.items()}
    spec = TrialSpec(study="hide_seek", data_id="d", representation="original", backbone="basecnn", image_size=32,
                     recipe=TrainRecipe(epochs=epochs, batch_size=16, lr=3e-3))
    ctx = TrialContext(spec=spec, run_dir=str(tmp_path), data=DataRef("d", "", (1.0, 1.0)), wandb="offline",
                       project="t", checkpoint_every_s=0.0)
    return spec, ctx, datasets


def test_trial_history_once_per_epoch_across_a_resume_and_summary_of_the_kept_epoch(tmp_path, phantom_manifest,
                                                                                       monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    spec, ctx, datasets = _context(tmp_path, phantom_manifest, epochs=5)
    crashed = _OldCheckpoint(datasets, keep=1, stop_after=2)  # dies after epoch 2; its checkpoint is epoch 1's
    with pytest.raises(RuntimeError, match="worker lost"):
        run_trial(ctx, crashed)
    assert crashed.state["epoch"] == 1
    retry = _Session(datasets, state=crashed.state)
    run_trial(ctx, retry)
    assert [r["epoch"] for r in retry.reports] == [2, 3, 4]  # epoch 2 trained again ...

    trial_dir = tmp_path / "trials" / spec.trial_id
    history, summary = read_run(trial_dir, spec.trial_id)
    steps = [row["_step"] for row in history]
    assert steps == [0, 1, 2, 3, 4], steps  # ... but logged once
    assert [row["epoch"] for row in history] == steps

    meta = json.loads((trial_dir / "trial.json").read_text())
    best = meta["best_epoch"]
    assert summary["selected_epoch"] == best
    assert summary["val_auroc"] == pytest.approx(meta["metrics"]["val_auroc"])
    assert summary["val_auroc"] == pytest.approx(history[best]["val_auroc"], abs=1e-6)
    assert summary["val_loss"] == pytest.approx(history[best]["val_loss"], abs=1e-6)
    assert summary["test_auroc"] == pytest.approx(meta["metrics"]["test_auroc"])
    assert summary["test_positive_class"] == "CVP"
    assert summary["test_auroc_ci_lo"] < summary["test_auroc_positive"] < summary["test_auroc_ci_hi"]
    assert summary["test_auroc_positive"] == pytest.approx(meta["metrics"]["test_auroc"])  # binary: same class


def test_summary_run_id_is_per_run_directory_and_data(tmp_path):
    import polars as pl

    results = pl.DataFrame({"data_id": ["abc", "abc"]})
    a = summary_id("hide_seek", tmp_path / "demo", results)
    assert a == summary_id("hide_seek", tmp_path / "demo", results)  # the same run: resumed, not a new run
    assert a != summary_id("hide_seek", tmp_path / "covidx", results)
    assert a != summary_id("hide_seek", tmp_path / "demo", pl.DataFrame({"data_id": ["xyz"]}))
    assert a.startswith("hide_seek-summary-")


def test_workers_get_the_drivers_wandb_credentials_entity_and_project(tmp_path, monkeypatch):
    from cxrray.tuning import cli
    from cxrray.tuning.runner import worker_env

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_PROJECT", "cxr")
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    monkeypatch.setattr("cxrray.tuning.precheck.wandb_reachable", lambda timeout=10.0: "")  # no network here
    p = cli.study_parser(None, cli.Study)
    study = cli.parse_study(p, ["--wandb", "online", "--entity", "my-lab", "--out", str(tmp_path)], cli.Study)
    assert (study.wandb, study.entity) == ("online", "my-lab")
    env = worker_env(tmp_path, "online")
    assert env["WANDB_API_KEY"] == "k" * 40 and env["WANDB_ENTITY"] == "my-lab" and env["WANDB_PROJECT"] == "cxr"
    assert env["WANDB_MODE"] == "online" and "UNRELATED_SECRET" not in env


def test_a_workspace_that_cannot_be_pushed_is_one_line_and_the_definition_stays(tmp_path, capsys, monkeypatch):
    """Online without network or rights: the sweep is complete, the push says so in one line and names the
    command that pushes the written definition later; that command shows the panels and the keys they read."""
    from cxrray.analysis.__main__ import main
    from cxrray.config import RunLayout
    from cxrray.report.dashboard import Dashboard, dashboard_of
    from cxrray.studies.finish import push_workspace

    layout = RunLayout(tmp_path)
    board = dashboard_of("hide_seek", "cxr", {"cell_verdicts", "subgroups"}, {"auroc_forest"}, entity="lab")
    board.write(layout.workspace)
    assert Dashboard.read(layout.workspace) == board

    def refused(self, entity=None):
        raise ConnectionError("no route to api.wandb.ai")

    monkeypatch.setattr(Dashboard, "push", refused)
    push_workspace(board, layout)
    line = capsys.readouterr().out.strip()
    assert line == (f"[cxrray] W&B workspace not pushed (ConnectionError: no route to api.wandb.ai); later: python -m "
                    f"cxrray.analysis workspace {tmp_path}")
    assert main(["workspace", str(tmp_path), "--show"]) == 0
    shown = capsys.readouterr().out
    assert "line  validation AUROC by epoch: val_auroc" in shown
    assert "table cell_verdicts: analysis/cell_verdicts" in shown
    assert "Bias and subgroups (the summary run)" in shown and "table subgroups: analysis/subgroups" in shown
    assert main(["workspace", str(tmp_path / "nowhere"), "--show"]) == 2
    assert "no workspace definition" in capsys.readouterr().err
