"""The trial record (issue 27, item 3): ``trial.json`` is one frozen record, written and read only through it."""

import json

import pytest

from cxrray.config import TrialDir, TrialSpec
from cxrray.records import TrialRecord
from cxrray.registry import UserError


def _spec():
    return TrialSpec(study="hide_seek", data_id="d0", representation="lungs_removed", backbone="resnet18", task="CL2",
                     seed=1)


def test_round_trip_and_results_row(tmp_path):
    spec = _spec()
    rec = TrialRecord.from_meta(spec, {"init": "random", "best_epoch": 3, "best_val_auroc": 0.91,
                                       "best_val": {"auroc": 0.91, "loss": 0.3}, "train_loss": [0.7, float("nan"), 0.4],
                                       "degenerate": "", "node_id": "n1", "stage1_best_epoch": 1},
                                {"test_auroc": 0.88}, finished=123.0)
    trial = TrialDir(tmp_path)
    rec.write(trial)
    on_disk = json.loads((tmp_path / "trial.json").read_text())
    assert on_disk["trial_id"] == spec.trial_id and on_disk["method"] == {"stage1_best_epoch": 1}
    again = TrialRecord.read(trial)
    assert again.spec == spec and again.best_epoch == 3 and again.method["stage1_best_epoch"] == 1
    row = again.results_row()
    assert row["train_loss_min"] == 0.4 and row["test_auroc"] == 0.88 and row["status"] == "finished"
    assert row["representation"] == "lungs_removed" and row["run_name"] == spec.run_name


def test_an_older_file_keeps_unknown_keys_and_a_wrong_id_is_refused(tmp_path):
    spec = _spec()
    old = {"spec": spec.to_dict(), "trial_id": spec.trial_id, "init": "random", "best_epoch": 0,
           "best_val_auroc": 0.5, "stage1_val_auroc": 0.7, "metrics": {}}
    assert TrialRecord.from_dict(old).method == {"stage1_val_auroc": 0.7}
    with pytest.raises(UserError, match="says trial deadbeef"):
        TrialRecord.from_dict(old | {"trial_id": "deadbeef"})
