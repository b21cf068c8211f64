#!/usr/bin/env python
"""How the analysis grows with trials and test images (issue 28, item 6), measured on synthetic stored runs.

A stored run is what the analysis reads: ``predictions.parquet`` (test images of every trial: patients with 1-3
images, sex, age and view) and ``results.parquet`` (hide-and-seek trials: 5 representations x backbones x
seeds). Trials grow at a fixed image count and images at a fixed trial count, side by side in one run; each
point is the wall time of ``run_analysis`` with ``--analysis statistics`` (the model-based steps, saliency and
transfer, run per trial and are cached per trial: ``cache/analysis/``). The growth exponents are the log-log
slopes; the paper sweep (225 trials x 20,000 test images) is projected from the measured corner (the most trials
with the most images), linearly in both (fixed per-trial costs make the measured growth slower than that).
Last line: ``analysis: exponent trials = X, images = Y; paper sweep projected Z CPU-hours``.

    python bench/analysis_scale.py             # about 5 minutes on 2 CPUs
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from cxrray.analysis.analyze import run_analysis
from cxrray.analysis.steps import analysis_options

REPRESENTATIONS = ("original", "lungs_isolated", "lungs_removed", "lungs_framed", "lungs_boxed_out")
BACKBONES = ("resnet18", "densenet121", "alexnet", "vgg11", "resnet50", "efficientnet_b0", "mobilenet_v3",
             "convnext_tiny", "vit_small")
PAPER = (225, 20_000)


def stored_run(root: Path, trials: int, images: int, seed: int = 0) -> Path:
    """A run folder holding ``trials`` hide-and-seek trials scored on the same ``images`` test images."""
    rng = np.random.default_rng(seed)
    patients = max(images // 2, 10)
    patient = np.sort(rng.integers(0, patients, images))
    y = (rng.random(patients) < 0.4)[patient]
    sex = np.where(rng.random(patients) < 0.5, "F", "M")[patient]
    age = rng.integers(20, 90, patients)[patient]
    view = np.where(rng.random(images) < 0.6, "PA", "AP")
    base = {"row": np.arange(1, images + 1), "patient_id": [f"p{i}" for i in patient], "source": "a",
            "label": np.where(y, "CVP", "NOR"), "severity": "", "sex": sex, "age": age, "view": view,
            "target": y.astype(int), "split": "test"}
    preds, res = [], []
    for k in range(trials):
        rep, bb, s = REPRESENTATIONS[k % 5], BACKBONES[(k // 5) % len(BACKBONES)], k // (5 * len(BACKBONES))
        strength = 2.0 if rep in ("original", "lungs_isolated") else 0.3
        score = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, images))))
        tid = f"t{k:04d}"
        preds.append(pl.DataFrame(base | {"prob_NCV": 1 - score, "prob_CVP": score, "trial_id": tid}))
        res.append({"study": "hide_seek", "representation": rep, "backbone": bb, "task": "CL2", "pretraining": "none",
                    "design": "random", "seed": s, "fold": 0, "trial_id": tid, "run_name": f"{rep}.{bb}.none.s{s}",
                    "status": "finished", "init": "random", "best_val_auroc": 0.9})
    root.mkdir(parents=True, exist_ok=True)
    pl.concat(preds).write_parquet(root / "predictions.parquet")
    pl.DataFrame(res).write_parquet(root / "results.parquet")
    return root


def timed(trials: int, images: int, work: Path) -> float:
    run = stored_run(work / f"t{trials}-n{images}", trials, images)
    t0 = time.process_time()
    run_analysis(run, analysis_options("statistics"))
    return time.process_time() - t0


def slope(xs: list[int], ts: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def run(trial_steps: tuple[int, ...] = (10, 30, 90), image_steps: tuple[int, ...] = (500, 2000, 8000),
        fixed_images: int = 500, fixed_trials: int = 10) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        by_trials = [timed(t, fixed_images, work) for t in trial_steps]
        by_images = [timed(fixed_trials, n, work) for n in image_steps]
        corner = timed(trial_steps[-1], image_steps[-1], work)  # the measured point nearest the paper sweep
    a, b = slope(list(trial_steps), by_trials), slope(list(image_steps), by_images)
    # From the corner, linear (or steeper, where measured so) in trials and in images: at these sizes fixed costs
    # make the measured exponents < 1, so linear growth from the nearest measured point bounds the paper sweep.
    projected = corner * (PAPER[0] / trial_steps[-1]) ** max(a, 1.0) * (PAPER[1] / image_steps[-1]) ** max(b, 1.0) \
        / 3600
    show = lambda xs, ts: ", ".join(f"{x}: {t:.1f}" for x, t in zip(xs, ts, strict=True))  # noqa: E731
    detail = (f"CPU-s by trials ({show(trial_steps, by_trials)}) at {fixed_images} images; by images "
              f"({show(image_steps, by_images)}) at {fixed_trials} trials; {trial_steps[-1]} trials x "
              f"{image_steps[-1]} images: {corner:.1f}")
    print(f"analysis: exponent trials = {a:.2f}, images = {b:.2f}; paper sweep projected {projected:.2f} CPU-hours "
          f"(statistics)", file=sys.stderr)
    return [{"benchmark": "analysis growth in trials", "value": a, "unit": "", "goal": "<= 1.1", "ok": a <= 1.1,
             "detail": detail},
            {"benchmark": "analysis growth in images", "value": b, "unit": "", "goal": "<= 1.1", "ok": b <= 1.1,
             "detail": detail},
            {"benchmark": "paper-sweep statistics (CPU-min)", "value": projected * 60, "unit": "", "goal": "<= 5",
             "ok": projected * 60 <= 5, "detail": f"225 trials x 20,000 images, from the largest points; {detail}"}]


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']}: {r['value']:.2f} (goal {r['goal']}; {'ok' if r['ok'] else 'MISSED'}) - {r['detail']}")
