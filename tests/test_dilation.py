"""Mask-dilation sensitivity (issue 30, item 2): the grown mask hides exactly the rim it should, the axis adds
trials without changing any existing trial id, the analysis judges each dilation by the shortcut rule (d = 0 is
the shortcut step's own verdict) and says whether the verdict survives; the known answer on the border phantom
(a signal just inside the lung border, missed by the mask) is a slow end-to-end sweep."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from cxrray.config import TrialSpec
from cxrray.representations import apply_representation
from cxrray.representations.base import dilate
from cxrray.tuning.study import hide_seek_specs


def test_dilation_grows_the_mask_by_exactly_its_pixels():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:20, 12:18] = 1
    for px in (0, 1, 3):
        grown = dilate(mask, px)[0, 0].numpy() > 0
        rows, cols = np.flatnonzero(grown.any(1)), np.flatnonzero(grown.any(0))
        assert (rows[0], rows[-1], cols[0], cols[-1]) == (10 - px, 19 + px, 12 - px, 17 + px)
        assert grown.sum() == (10 + 2 * px) * (6 + 2 * px)  # a square element: the box grows, nothing else


def test_a_rim_the_mask_misses_shows_at_dilation_0_and_is_hidden_beyond_its_width():
    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:24, 8:24] = 1.0  # the lung, rim included
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:22, 10:22] = 1  # the mask misses a 2-px rim
    shown = [float(apply_representation("lungs_removed", image, mask, d).sum()) for d in (0, 1, 2, 3)]
    assert shown[0] == 16 * 16 - 12 * 12 and shown[1] == 16 * 16 - 14 * 14 and shown[2] == shown[3] == 0.0
    isolated = apply_representation("lungs_isolated", image, mask, 2)  # grown then its interior: the lung
    assert float(isolated.sum()) == 14 * 14


def test_the_axis_adds_lung_hiding_trials_and_keeps_every_existing_id():
    base = hide_seek_specs(data_id="d", representations=("original", "lungs_removed", "lungs_framed"),
                           backbones=("basecnn",), seeds=(0, 1))
    axis = hide_seek_specs(data_id="d", representations=("original", "lungs_removed", "lungs_framed"),
                           backbones=("basecnn",), seeds=(0, 1), mask_dilation=(0, 4, 8))
    assert [s.trial_id for s in axis[:len(base)]] == [s.trial_id for s in base]
    grown = axis[len(base):]
    assert [s.run_name for s in grown] == ["lungs_removed.d4.basecnn.none.s0", "lungs_removed.d4.basecnn.none.s1",
                                           "lungs_removed.d8.basecnn.none.s0", "lungs_removed.d8.basecnn.none.s1"]
    assert len({s.trial_id for s in axis}) == len(axis)
    # a stored trial (its trial.json written before the axis existed) reads back with the same id
    old = {k: v for k, v in base[1].to_dict().items() if k != "mask_dilation"}
    assert TrialSpec.from_dict(old).trial_id == base[1].trial_id


@pytest.mark.parametrize("bad", [(-1,), (16,)])
def test_a_dilation_out_of_range_is_refused_naming_the_option(bad):
    from cxrray.registry import UserError

    with pytest.raises(UserError, match="--mask-dilation"):
        hide_seek_specs(data_id="d", representations=("original", "lungs_removed"), backbones=("basecnn",),
                        image_size=32, mask_dilation=bad)


def _stored(tmp_path, signal: dict[tuple[str, int], float], n: int = 300) -> None:
    """A stored run: one CL2 trial per (representation, dilation) whose CVP score carries ``signal``."""
    rng = np.random.default_rng(0)
    y = rng.random(n) < 0.4
    preds, res = [], []
    for k, ((rep, d), strength) in enumerate(signal.items()):
        score = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, n))))
        tid = f"t{k}"
        preds.append(pl.DataFrame({"row": np.arange(1, n + 1), "patient_id": [f"p{i}" for i in range(n)],
                                   "source": "a", "label": np.where(y, "CVP", "NOR"), "severity": "none",
                                   "target": y.astype(int), "prob_NCV": 1 - score, "prob_CVP": score,
                                   "trial_id": tid, "split": "test"}))
        res.append({"study": "hide_seek", "representation": rep, "backbone": "resnet18", "task": "CL2",
                    "pretraining": "none", "design": "random", "seed": 0, "fold": 0, "mask_dilation": d,
                    "trial_id": tid, "run_name": f"{rep}{f'.d{d}' if d else ''}.resnet18.none.s0",
                    "status": "finished", "init": "random", "best_val_auroc": 0.9})
    pl.concat(preds).write_parquet(tmp_path / "predictions.parquet")
    pl.DataFrame(res).write_parquet(tmp_path / "results.parquet")


def test_each_dilation_is_judged_by_the_shortcut_rule_and_a_changed_verdict_is_named(tmp_path):
    from cxrray.analysis.analyze import run_analysis

    _stored(tmp_path, {("original", 0): 3.0, ("lungs_removed", 0): 3.0, ("lungs_removed", 2): 2.8,
                       ("lungs_removed", 4): 0.0, ("lungs_boxed_out", 0): 0.0, ("lungs_boxed_out", 4): 0.0})
    result = run_analysis(tmp_path)
    shortcut = result.artifacts["shortcut"].tables["cell_verdicts"]
    assert shortcut.height == 2 and "mask_dilation" not in shortcut.columns  # the other steps: undilated only
    table = result.artifacts["dilation"].tables["dilation"]
    removed = table.filter(pl.col("representation") == "lungs_removed").sort("mask_dilation")
    assert removed["mask_dilation"].to_list() == [0, 2, 4]
    assert removed["verdict"].to_list()[:2] == ["shortcut", "shortcut"] and removed["verdict"][2] != "shortcut"
    assert set(removed["survives"]) == {"changes at 4 px"}
    at0 = shortcut.filter(pl.col("representation") == "lungs_removed").row(0, named=True)
    assert removed.row(0, named=True)["auroc"] == at0["auroc"] and removed["level"][0] == at0["level"]
    boxed = table.filter(pl.col("representation") == "lungs_boxed_out")
    assert set(boxed["survives"]) == {"survives"} and boxed.height == 2
    assert "lungs_removed / resnet18: changes at 4 px: 0 px shortcut" in result.text
    assert (tmp_path / "analysis" / "dilation.csv").exists() and (tmp_path / "analysis" / "dilation.png").exists()
    report = (tmp_path / "report.html").read_text()
    assert "Mask-dilation sensitivity" in report and "changes at 4 px" in report


def test_a_run_without_the_axis_has_no_dilation_step_output(tmp_path):
    from cxrray.analysis.analyze import run_analysis

    _stored(tmp_path, {("original", 0): 3.0, ("lungs_removed", 0): 0.0})
    result = run_analysis(tmp_path)
    assert result.artifacts["dilation"].tables == {} and "Mask-dilation" not in result.text


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_a_rim_the_masks_miss_is_found_at_dilation_0_and_gone_beyond_its_width(tmp_path, seed):
    """The known answer on the border phantom (COVID-19 only in a 2-px rim just inside the lung border, which
    its masks miss): a real sweep of original, lungs_removed and lungs_removed with the mask grown by 4 px.
    Undilated, the lungs-removed model still reads the rim (shortcut); grown past the rim, it does not."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(root / "sweeps" / "hide_seek.py"), "--phantom", "border",
                           "--phantom-seed", str(seed), "--phantom-patients", "120", "--out", str(tmp_path / "run"),
                           "--representations", "original", "lungs_removed", "--mask-dilation", "0", "4",
                           "--backbones", "resnet18", "--epochs", "8", "--analysis", "statistics", "--wandb",
                           "disabled"], capture_output=True, text=True, timeout=900, env=env, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pl.read_csv(tmp_path / "run" / "analysis" / "dilation.csv").sort("mask_dilation")
    assert table["mask_dilation"].to_list() == [0, 4]
    at0, at4 = table.row(0, named=True), table.row(1, named=True)
    assert at0["verdict"] == "shortcut" and at0["ci_lo_corrected"] > 0.5, at0
    assert at4["verdict"] != "shortcut" and at0["survives"] == "changes at 4 px", at4
    assert at4["verdict"] == "degenerate" or at4["ci_lo_corrected"] < 0.6, at4  # nothing left to read
