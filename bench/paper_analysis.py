#!/usr/bin/env python
"""The paper analysis measured end to end, not projected (issue 41): a run folder of paper shape, every step.

The run folder: 5 hide-and-seek representations x 9 backbones x 5 seeds = 225 trials (``--shape``), each with
20,000 synthesised test predictions and 4,000 validation ones (``--test-images``; patients with 1-3 images,
three sources, sex, age and view; a lung-reading representation scores better than a lung-hiding one) and a
real saved model of its backbone at 224 px (its initial weights: what the model-based steps cost does not
depend on what the weights learned), written by the trainer's own ``write_outputs`` beside the specs of a real
``hide_seek`` study on a phantom's shards, which the model-based steps (Grad-CAM saliency, the transfer
matrix) read. Then ``python -m cxrray.analysis RUN --analysis all`` in a fresh process, with every CPU as a
worker and ``--gpus``: its wall time, each step's, and its peak resident set. Goal on a GPU machine: the whole
analysis in <= 10 minutes of wall time.

    python bench/paper_analysis.py --gpus 1          # the lent GPU machine: about 10 minutes in all
    python bench/paper_analysis.py --dry-run         # this machine: the same path at a toy shape, about 2 minutes
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from _busy import status_mib  # (bench/ is not a package)
from gpu import make_shards, phantom

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("alexnet", "vgg11", "resnet18", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v3",
             "convnext_tiny", "vit_small")
GOAL_S = 600.0
TASK = "CL2"
DATA_ID = "paperphantom"
LUNGS_SEEN = ("original", "lungs_isolated")  # representations whose synthesised scores read the lungs


def synthetic_split(rng: np.random.Generator, images: int, split: str, classes: tuple[str, ...],
                    row0: int) -> pl.DataFrame:
    """The columns a trial's predictions carry for ``images`` images of one split (no scores yet)."""
    patients = max(images // 2, 10)
    patient = np.sort(rng.integers(0, patients, images))
    y = (rng.random(patients) < 0.4)[patient]
    return pl.DataFrame({
        "row": np.arange(row0, row0 + images), "patient_id": [f"{split}{i}" for i in patient],
        "source": np.asarray(["a", "b", "c"])[rng.integers(0, 3, patients)][patient],
        "label": np.where(y, "CVP", "NOR"), "severity": "",
        "view": np.where(rng.random(images) < 0.6, "PA", "AP"),
        "sex": np.where(rng.random(patients) < 0.5, "F", "M")[patient],
        "age": rng.integers(20, 90, patients)[patient], "target": y.astype(np.int64)})


def build_run(run_dir: Path, shape: tuple[int, ...], backbones: tuple[str, ...], test_images: int,
              size: int, phantom_images: int) -> int:
    """Write the run folder (phantom, shards, trial folders, the gathered tables); returns the trial count."""
    import torch

    from cxrray.config import RunLayout, TrainRecipe
    from cxrray.data.tasks import TASKS
    from cxrray.models import build_backbone
    from cxrray.models.card import ModelCard
    from cxrray.representations import out_channels
    from cxrray.training.outputs import write_outputs
    from cxrray.tuning.gather import collect
    from cxrray.tuning.study import HIDE_SEEK_REPRESENTATIONS, hide_seek_specs

    n_reps, n_backbones, n_seeds = shape
    reps, chosen = HIDE_SEEK_REPRESENTATIONS[:n_reps], backbones[:n_backbones]
    layout = RunLayout(run_dir)
    # the shards by Ray Data's ingest where Ray is installed, else in this process (the lent GPU machine has no
    # Ray): bench/gpu.py's phantom and writer
    make_shards(phantom(run_dir / "data", phantom_images, size), layout.shards(DATA_ID, size), size)
    specs = hide_seek_specs(data_id=DATA_ID, representations=reps, backbones=chosen,
                            seeds=tuple(range(n_seeds)), task=TASK, image_size=size, recipe=TrainRecipe(epochs=1))
    rng = np.random.default_rng(0)
    task = TASKS.get(TASK)
    test = synthetic_split(rng, test_images, "test", task.classes, 1)
    val = synthetic_split(rng, max(test_images // 5, 20), "val", task.classes, test_images + 1)
    saved = dict[tuple[str, int], Path]()
    for spec in specs:
        strength = 2.0 if spec.representation in LUNGS_SEEN else 0.4
        frames = []
        for split, base in (("val", val), ("test", test)):
            y = base["target"].to_numpy()
            score = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, base.height))))
            frames.append(base.with_columns(pl.Series("prob_NCV", 1 - score), pl.Series("prob_CVP", score),
                                            pl.lit(spec.trial_id).alias("trial_id"), pl.lit(split).alias("split")))
        meta = {"init": "random", "best_epoch": 0, "best_val_auroc": 0.8, "train_s": 1.0, "train_loss": [0.6]}
        trial, key = layout.trial(spec.trial_id), (spec.backbone, out_channels(spec.representation))
        if key not in saved:  # one saved model per backbone and channel count, linked into the other trials
            torch.manual_seed(len(saved))  # (a vgg11 file is 0.5 GB: 225 copies would not fit the disk)
            model, _ = build_backbone(spec.backbone, task.num_outputs, key[1], False, size)
            write_outputs(trial, spec, frames, {"test_auroc": 0.8}, {trial.model.name: model.state_dict()}, meta,
                          None)
            saved[key] = trial.model
            continue
        trial.path.mkdir(parents=True, exist_ok=True)
        os.link(saved[key], trial.model)
        ModelCard.of(spec.trial_id, spec.backbone, spec.representation, spec.task, size, key[1], task.num_outputs,
                     False).write(trial)
        write_outputs(trial, spec, frames, {"test_auroc": 0.8}, {}, meta, None)
    collect(specs, run_dir)
    return len(specs)


def analyse(run_dir: Path, workers: int, gpus: int) -> dict:
    """``python -m cxrray.analysis`` over the run folder in a fresh process: wall, each step's seconds, peak RSS."""
    cmd = [sys.executable, "-m", "cxrray.analysis", str(run_dir), "--analysis", "all", "--workers", str(workers),
           "--gpus", str(gpus)]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    t0, peak = time.time(), 0.0
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        while proc.poll() is None:  # its own peak (VmHWM), not that of Ray's processes this one started before
            peak = max(peak, status_mib(proc.pid, "VmHWM"))
            time.sleep(0.5)
        wall = time.time() - t0
        log.seek(0)
        out = log.read()
    if proc.returncode not in (0, 1):  # 1: a step failed (named in the output); the others stand
        raise RuntimeError(out[-6000:])
    steps = dict(re.findall(r"\[cxrray\] analysis step \d+/\d+ (\w+): ([\d.]+) s", out))
    return {"wall_s": wall, "peak_mib": peak, "steps": steps, "failed": proc.returncode == 1, "tail": out[-1500:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="5x9x5", help="representations x backbones x seeds (default 5x9x5: 225)")
    p.add_argument("--test-images", type=int, default=20_000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--phantom-images", type=int, default=2000, help="the shards the model-based steps read "
                   "(about 20 %% test)")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--out", help="keep the run folder here (default: a temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="a toy shape on this machine: 5x2x2, 2,000 test "
                   "images, 64 px, basecnn and resnet18, 120 phantom images")
    a = p.parse_args(argv)
    backbones: tuple[str, ...] = BACKBONES
    shape = tuple(int(x) for x in a.shape.split("x"))
    if len(shape) != 3:
        p.error("--shape R x B x S, for example 5x9x5")
    if a.dry_run:
        shape, backbones, a.test_images, a.size, a.phantom_images = DRY
    r = measure(shape, backbones, a.test_images, a.size, a.phantom_images, a.gpus, a.out)
    print(r["line"] + ("; a step FAILED:\n" + r["tail"] if r["failed"] else ""), flush=True)
    return 0 if r["ok"] or a.dry_run else 1


DRY = ((5, 2, 2), ("basecnn", "resnet18"), 2000, 64, 120)  # shape, backbones, test images, px, phantom images


def measure(shape: tuple[int, ...], backbones: tuple[str, ...], test_images: int, size: int, phantom_images: int,
            gpus: int, out: str | None = None) -> dict:
    """Build the run folder (in ``out``, else a temporary one), analyse it; the figures and one line."""
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(out or tmp) / "paper_run"
        t0 = time.time()
        trials = build_run(run_dir, shape, backbones, test_images, size, phantom_images)
        built = time.time() - t0
        r = analyse(run_dir, cpus, gpus)
    r["ok"] = r["wall_s"] <= GOAL_S and not r["failed"]
    steps = ", ".join(f"{k} {float(v):.0f} s" for k, v in r["steps"].items())
    r["line"] = (f"paper analysis, {trials} trials x {test_images} test images, {size} px, {cpus} CPUs, {gpus} "
                 f"GPU(s): {r['wall_s']:.0f} s wall (goal <= {GOAL_S:.0f} s; {'ok' if r['ok'] else 'MISSED'}), peak "
                 f"{r['peak_mib']:.0f} MiB; run folder built in {built:.0f} s; steps: {steps or 'not reported'}")
    return r


def run() -> list[dict]:
    """``make bench``'s row: the paper shape where a GPU is, else the toy shape as information (no goal)."""
    import torch

    gpu = torch.cuda.is_available()
    r = measure((5, 9, 5), BACKBONES, 20_000, 224, 2000, 1) if gpu else measure(*DRY, gpus=0)
    return [{"benchmark": "paper analysis end to end (s)" if gpu else "paper analysis, toy shape, CPU (s)",
             "value": r["wall_s"], "unit": "s", "goal": f"<= {GOAL_S:.0f}" if gpu else "info",
             "ok": r["ok"] if gpu else not r["failed"], "detail": r["line"]}]


if __name__ == "__main__":
    sys.exit(main())
