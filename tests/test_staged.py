"""Staged pretraining: the phase graph, head replacement, phantom stand-ins, and a real sweep of paths a, c, f."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from cxrray.data.manifest import load_manifest
from cxrray.models import BACKBONES, build_backbone
from cxrray.models.backbones import head_keys
from cxrray.tuning.staged import PATHS, datasets_needed, staged_specs

ROOT = Path(__file__).resolve().parents[1]
IDS = {"nih14": "d1", "pneu_high": "d2", "pneu_low": "d3", "target": "d4"}


def test_paths_share_their_upstream_phases():
    waves = staged_specs(data_ids=IDS, seeds=(0, 1, 2), backbones=("resnet18",), image_size=32)
    specs = [s for w in waves for s in w]
    upstream = [s for s in specs if s.data_id != "d4"]
    # nih14, pneu_high, pneu_low, nih14>pneu_high, nih14>pneu_low: five distinct stages for six paths x 3 seeds
    assert sorted(s.pretraining for s in upstream) == sorted(
        ["nih14", "pneu_high", "pneu_low", "nih14>pneu_high", "nih14>pneu_low"])
    targets = [s for s in specs if s.data_id == "d4"]
    assert len(targets) == 18 and len({s.trial_id for s in specs}) == len(specs)
    by_id = {s.trial_id: s for s in specs}
    for t in targets:  # walk each chain back: it is exactly the path's phases, in order
        chain, cur = [], t
        while cur.init_from:
            cur = by_id[cur.init_from]
            chain.append(cur.pretraining.split(">")[-1])
        assert tuple(reversed(chain)) == PATHS.get(t.pretraining)
    wave_of = {s.trial_id: k for k, w in enumerate(waves) for s in w}
    assert all(wave_of[s.init_from] < wave_of[s.trial_id] for s in specs if s.init_from)
    assert datasets_needed(["c", "f"]) == ["nih14"] and datasets_needed(["f"]) == []
    phase1 = next(s for s in upstream if s.pretraining == "nih14")
    assert phase1.task == "NIH14" and phase1.recipe.lr == 0.01 and phase1.recipe.optimizer == "sgd"
    assert {s.recipe.lr for s in targets} == {5e-4} and {s.recipe.lr for s in upstream if s.task == "PNEU"} == {1e-3}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_head_keys_are_the_class_layers(name):
    keys = head_keys(name, 1)
    assert keys and all(k.endswith(("weight", "bias")) for k in keys)
    # one class layer (weight, bias); five for CVR-Net's five heads; COVID-CAPS's class capsules have one
    # weight matrix and no bias
    assert len(keys) == {"cvrnet": 10, "covid_caps": 1}.get(name, 2)


def test_stage_weights_carry_over_and_the_head_is_replaced(tmp_path):
    torch.manual_seed(0)
    src, _ = build_backbone("resnet18", 14, 1, image_size=32)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)  # far from any fresh init
    torch.save(src.state_dict(), tmp_path / "model.pt")
    for n_out, replace in ((2, True), (14, True), (14, False)):
        dst, init = build_backbone("resnet18", n_out, 1, image_size=32, weights=str(tmp_path / "model.pt"),
                                   replace_head=replace)
        a, b = src.state_dict(), dst.state_dict()
        body = [k for k in b if k not in head_keys("resnet18", 1)]
        assert all(torch.equal(a[k], b[k]) for k in body)
        same_head = b["fc.weight"].shape == a["fc.weight"].shape and torch.equal(b["fc.weight"], a["fc.weight"])
        assert same_head == (not replace), (n_out, replace)
        assert init == "file:model.pt"


def test_phantom_stand_ins(tmp_path):
    from cxrray.data.phantom_phases import write_multilabel_phantom, write_pneumonia_phantom

    ml = load_manifest(write_multilabel_phantom(tmp_path / "ml", n_patients=40, size=64))
    cols = [c for c in ml.columns if c.startswith("finding_")]
    assert len(cols) == 14
    vals = ml.select(pl.concat_list(cols).explode()).to_series()
    assert 0.03 < (vals == "").mean() < 0.2 and set(vals) == {"0", "1", ""}  # some unknowns
    pneu = ml.filter(pl.col("finding_Pneumonia") == "1")
    assert pneu.height and set(pneu["label"]) == {"PNA"}
    assert "CVP" not in set(ml["label"])
    hi = load_manifest(write_pneumonia_phantom(tmp_path / "hi", prevalence=0.24, n_patients=200, size=32))
    lo = load_manifest(write_pneumonia_phantom(tmp_path / "lo", prevalence=0.02, n_patients=200, size=32, seed=9))
    share = lambda m: m.group_by("patient_id").agg(pl.col("label").first() != "NOR")["label"].mean()  # noqa: E731
    assert 0.15 < share(hi) < 0.33 and share(lo) < 0.06


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "staged_pretraining.py"), "--smoke-test",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@pytest.mark.slow
def test_staged_sweep_paths_a_c_f_reuse_phase_one(tmp_path):
    proc = _sweep(tmp_path, "--paths", "a", "c", "f")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pl.read_parquet(tmp_path / "results.parquet")
    assert results.height == 5 and set(results["status"]) == {"finished"}
    meta = {r["pretraining"]: json.loads((tmp_path / "trials" / r["trial_id"] / "trial.json").read_text())
            for r in results.iter_rows(named=True)}
    phase1, phase2 = meta["nih14"], meta["nih14>pneu_high"]
    assert phase1["spec"]["task"] == "NIH14" and phase2["spec"]["task"] == "PNEU"
    assert meta["c"]["init"] == f"stage:{phase1['trial_id']}" and meta["a"]["init"] == f"stage:{phase2['trial_id']}"
    assert phase2["init"] == f"stage:{phase1['trial_id']}" and meta["f"]["init"] == "random"
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    p1 = preds.filter(pl.col("trial_id") == phase1["trial_id"])
    assert p1["y_Pneumonia"].is_not_null().all() and p1["prob_Pneumonia"].is_between(0, 1).all()
    assert set(preds.filter(pl.col("trial_id") == phase2["trial_id"])["split"]) == {"val"}  # 80/20: no test
    assert "| pretraining" in proc.stdout and "| a " in proc.stdout and "| f " in proc.stdout
    stamp = (tmp_path / "trials" / phase1["trial_id"] / "model.pt").stat().st_mtime_ns
    # Another seed of path c: phase 1 is reused, not retrained; only the new target trial runs.
    proc = _sweep(tmp_path, "--paths", "c", "--seeds", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[cxrray] 1 trials: 1 already finished, 0 to run" in proc.stdout
    assert (tmp_path / "trials" / phase1["trial_id"] / "model.pt").stat().st_mtime_ns == stamp
    new = pl.read_parquet(tmp_path / "results.parquet").filter(pl.col("seed") == 1)
    assert new.height == 1 and new["init"][0] == f"stage:{phase1['trial_id']}"
