"""Train on one representation, test on all (issue 20, item 3), known answer on the phantom: a model trained on
original images keeps its AUROC with the lungs removed only when a source shortcut lies outside the lungs
(slow: two trainings). That the matrix's diagonal reproduces each trial's stored test AUROC is tested on the
smoke sweep (``test_sweep_e2e``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("confound", [1.0, 0.0])
def test_a_model_trained_on_full_images_keeps_its_signal_without_the_lungs_only_with_a_shortcut(tmp_path, confound):
    out = tmp_path / "run"
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--confound", str(confound),
                           "--representations", "original", "--backbones", "resnet18", "--wandb", "disabled",
                           "--out", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    matrix = pl.read_csv(out / "analysis" / "transfer_matrix.csv")
    removed = matrix.filter(pl.col("test") == "lungs_removed").row(0, named=True)
    assert matrix.filter(pl.col("test") == "original")["auroc"][0] > 0.9  # it learned
    if confound:
        assert removed["ci_lo"] > 0.5  # the hospital's stamps, outside the lungs, still tell the classes
    else:
        assert removed["ci_lo"] < 0.5 < removed["ci_hi"] or removed["auroc"] < 0.5  # nothing outside to read
