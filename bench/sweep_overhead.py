"""Seconds per trial not spent inside training loops: start-up, scheduling, checkpoint and logging.

A trial's training loops are its epochs' train + validation passes (``train_s`` in
``trial.json``). Trials run one after another (one CPU each on this machine), so
a trial's overhead is the time between the previous trial's end (or the sweep's
start) and its own end, minus its training loops. Side by side in one Ray
session, on the same phantom shards, W&B offline:

- ``train`` launcher: a Ray Train worker group per trial (the pattern Ray's
  Tune + Train examples use);
- ``inline`` launcher (default for one-worker trials): the trial trains inside
  its Tune actor, which Tune reuses for the next trial;
- an inline sweep of one short trial then one whose training lasts >= 2 minutes,
  for the overhead fraction of a long trial.

The first trial of a sweep also starts the Tune actor (torch imports, shards
read once per actor); that is paid once per concurrent slot and reported.

Goals (issue 6): median overhead per trial <= 5 s; <= 5 % of wall time for a
trial that trains >= 2 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path


def _overheads(run_dir: Path, specs: list, t_start: float) -> tuple[list[float], list[float]]:
    """Per-trial overhead and training seconds, in finishing order."""
    from cxrray.config import RunLayout

    layout = RunLayout(run_dir)
    metas = sorted((json.loads(layout.trial(s.trial_id).meta.read_text()) for s in specs), key=lambda m: m["finished"])
    over, train, prev = [], [], t_start
    for m in metas:
        over.append(m["finished"] - prev - m["train_s"])
        train.append(m["train_s"])
        prev = m["finished"]
    return over, train


def _sweep(specs: list, run_dir: Path, data, launcher: str) -> tuple[list[float], list[float], float]:
    from cxrray.tuning.runner import run_sweep
    from cxrray.tuning.study import Resources, SweepOptions

    t0 = time.time()
    out = run_sweep(specs, run_dir=run_dir, data=data, options=SweepOptions(
        resources=Resources(launcher=launcher), wandb_mode="offline", project="cxrray-bench"))
    assert not out.failed, out.results
    over, train = _overheads(run_dir, specs, t0)
    return over, train, time.time() - t0


def run() -> list[dict]:
    from cxrray.config import TrainRecipe
    from cxrray.data.phantom import write_phantom
    from cxrray.tuning.prepare import prepare_data
    from cxrray.tuning.runner import start_ray
    from cxrray.tuning.study import hide_seek_specs

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start_ray(root, num_cpus=2)
        manifest = write_phantom(root / "ph", n_patients=60, seed=0)
        data = prepare_data(manifest, root, image_size=64, task="CL2")
        recipe = TrainRecipe(epochs=2, batch_size=32, lr=1e-3)
        reps = ("original", "lungs_isolated", "lungs_removed", "lungs_framed", "lungs_boxed_out")
        specs = hide_seek_specs(data_id=data.data_id, representations=reps, backbones=("resnet18",), seeds=(0,),
                                recipe=recipe)
        inline_over, inline_train, _ = _sweep(specs, root / "inline", data, "inline")
        train_over, _, _ = _sweep(specs[:3], root / "train", data, "train")
        epoch_s = statistics.median(inline_train) / recipe.epochs
        long_recipe = dataclasses.replace(recipe, epochs=max(3, math.ceil(160 / epoch_s)))
        long = hide_seek_specs(data_id=data.data_id, representations=("original",), backbones=("resnet18",),
                               seeds=(1,), recipe=long_recipe)  # after a short trial that starts the actor
        long_over, long_train, _ = _sweep(specs[:1] + long, root / "long", data, "inline")
        short = inline_over
        med_t, med_i = statistics.median(train_over), statistics.median(short)
        rows.append({"benchmark": "sweep overhead per trial, inline", "value": med_i, "unit": "s", "goal": "<= 5",
                     "ok": med_i <= 5.0, "detail": f"median of {len(short)} trials "
                     f"({', '.join(f'{x:.1f}' for x in short)} s; the first starts the actor)"})
        rows.append({"benchmark": "  Ray Train worker group per trial", "value": med_t, "unit": "s", "goal": "info",
                     "ok": True, "detail": f"median of {len(train_over)} trials; inline is {med_t / med_i:.1f}x less"})
        over, train = long_over[-1], long_train[-1]
        frac = over / (over + train)
        rows.append({"benchmark": "sweep overhead, trial training >=2 min", "value": 100 * frac, "unit": "%",
                     "goal": "<= 5", "ok": frac <= 0.05 and train >= 120,
                     "detail": f"{over:.1f} s of {over + train:.0f} s ({long_recipe.epochs} epochs, "
                     f"training {train:.0f} s, checkpoint every 30 s)"})
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
