#!/usr/bin/env python
"""The model-based analysis (issue 28, item 1): the transfer matrix's scoring as it was (per trial: the whole test
split read and decoded, then each representation made, for every trial) against streamed (``ScoreJob``: one read
of the split for every model, each representation made once per batch), in one process and as Ray tasks on 2
CPUs, side by side on one run; then the paper sweep's model-based steps projected from the measured rates.

The run: a real smoke sweep with resnet18 at 224 px (2 trials, 1 epoch); its trials replicated to ``trials``
(other seeds: new trial ids, the same weights) and its test split to ``images`` (shard files copied). Each scoring
is timed with its peak of traced allocations (numpy buffers: what a scorer holds of the split). The saliency
step's cost per trial (32 images: Grad-CAM for two classes, the randomisation check and ROAD) is measured on one
trial. The projection, with the analysis' defaults: the first of 5 seeds' models (45 of 225) x 5
representations x a sample of 1,000 test patients (about 1,500 images); and without them (225 models x 20,000
test images). CPU: at the measured resnet18 rate (one thread) scaled by the sweep's nine backbones' mean FLOPs
(1.7x resnet18's, published figures). GPU: the transfer at NVIDIA's published ResNet-50 inference rate (about
2,000 img/s in mixed precision on an A100) until a device measures it (``bench/gpu.py``), saliency on the GPU
machine's 16 CPUs.

    python bench/model_steps.py          # about 20 minutes on 2 CPUs (6 models x 240 images)
    python bench/model_steps.py 4 120    # about 7 minutes
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAPER_TRIALS, PAPER_IMAGES, SAMPLE_IMAGES = 225, 20_000, 1_500  # 1,000 patients at about 1.5 images each
MODEL_TRIALS = PAPER_TRIALS // 5  # the model-based steps explain the first of 5 seeds (``--model-seeds 1``)
FLOPS_VS_RESNET18 = 1.7  # mean GFLOPs of the nine backbones at 224 px / resnet18's 1.8
GPU_IMG_S = 2_000.0  # published ResNet-50 mixed-precision inference on an A100 (resnet50: 2.3x resnet18's FLOPs)
GPU_MACHINE_CPUS = 16  # the lent GPU machine's cores (saliency's Ray tasks run there beside the GPU)
GOAL_CPU_H, GOAL_GPU_H = 24.0, 1.0


def make_run(work: Path, trials: int, images: int) -> tuple[Path, dict[str, str]]:
    """A smoke sweep at 224 px with its trials and test images multiplied; returns (run, trial id -> test split)."""
    import pyarrow.parquet as pq

    from cxrray.config import RunLayout
    from cxrray.records import TrialRecord

    out = work / "run"
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--backbones",
                           "resnet18", "--image-size", "224", "--wandb", "disabled", "--analysis", "statistics",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    layout = RunLayout(out)
    originals = [TrialRecord.read(layout.trial(p.parent.name)) for p in (out / "trials").glob("*/trial.json")]
    split = layout.shards_of(originals[0].spec) / "test"
    files = sorted(split.glob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    for k in range(1, -(-images // rows)):
        for f in files:
            shutil.copy(f, f.with_name(f"{f.stem}-copy{k}.parquet"))
    splits = {r.spec.trial_id: str(split) for r in originals}
    for k in range(trials - len(originals)):
        source = originals[k % len(originals)]
        spec = dataclasses.replace(source.spec, seed=100 + k)
        trial = layout.trial(spec.trial_id)
        trial.path.mkdir(parents=True, exist_ok=True)
        for name in ("model.pt", "model.json"):
            shutil.copy(layout.trial(source.spec.trial_id).path / name, trial.path / name)
        dataclasses.replace(source, spec=spec).write(trial)
        splits[spec.trial_id] = str(split)
    return out, splits


def per_trial_before(run: Path, trial_ids: list[str], batch_size: int = 64) -> None:
    """The transfer scoring before streaming (the removed ``transfer.trial_transfer``'s reading and scoring)."""
    import torch

    from cxrray.config import RunLayout
    from cxrray.data.shards import read_split_local
    from cxrray.explain.saliency import load_trial
    from cxrray.representations import InputPipeline, hide_seek_representations, out_channels

    for tid in trial_ids:
        spec, card, model = load_trial(run, tid)
        batch = read_split_local(RunLayout(run).shards_of(spec) / "test")
        for rep in hide_seek_representations():
            if out_channels(rep) != out_channels(spec.representation):
                continue
            pipe = InputPipeline(rep, card.mean, card.std)
            with torch.no_grad():
                for i in range(0, len(batch["row"]), batch_size):
                    part = {k: np.asarray(v)[i:i + batch_size] for k, v in batch.items()}
                    card.probs(model(pipe.to_inputs(part, torch.device("cpu"))))


def measured(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, peak traced MiB) of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return wall, peak


def run(trials: int = 6, images: int = 240) -> list[dict]:
    import pyarrow.parquet as pq
    import torch

    from cxrray.explain.fanout import fan_out
    from cxrray.explain.saliency import trial_saliency
    from cxrray.explain.scoring import jobs_for, score_models

    torch.set_num_threads(1)  # one CPU per scorer, as a Ray task has: rates per CPU
    with tempfile.TemporaryDirectory() as tmp:
        out, splits = make_run(Path(tmp), trials, images)
        ids = list(splits)
        n_images = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(next(iter(splits.values()))).glob("*.parquet"))
        passes = len(ids) * 5 * n_images
        before = measured(lambda: per_trial_before(out, ids))
        streamed = measured(lambda: [score_models(j) for j in jobs_for(out, splits)])
        ray_s = measured(lambda: fan_out(score_models, jobs_for(out, splits, workers=2), 2))[0]
        saliency_s = measured(lambda: trial_saliency(out, ids[0], limit=32))[0]
    cpu_s = streamed[0] / passes  # CPU-seconds per image pass at 224 px, resnet18, one thread
    cpu_h = lambda t, n: t * (5 * n * cpu_s + saliency_s) * FLOPS_VS_RESNET18 / 3600  # noqa: E731
    gpu_h = lambda t, n: (t * 5 * n / GPU_IMG_S * (FLOPS_VS_RESNET18 / 2.3)  # noqa: E731
                          + t * saliency_s * FLOPS_VS_RESNET18 / GPU_MACHINE_CPUS) / 3600  # saliency on its CPUs
    detail = (f"{len(ids)} resnet18 models x 5 representations x {n_images} test images at 224 px: per trial "
              f"{before[0]:.1f} s (peak {before[1]:.0f} MiB), streamed {streamed[0]:.1f} s (peak {streamed[1]:.0f} "
              f"MiB), as 2 Ray tasks {ray_s:.1f} s wall; {1 / cpu_s:.0f} image passes per CPU-second; saliency "
              f"{saliency_s:.1f} CPU-s per trial")
    sample_h, full_h = cpu_h(MODEL_TRIALS, SAMPLE_IMAGES), cpu_h(PAPER_TRIALS, PAPER_IMAGES)
    gpu_sample, gpu_full = gpu_h(MODEL_TRIALS, SAMPLE_IMAGES), gpu_h(PAPER_TRIALS, PAPER_IMAGES)
    print(f"model-based steps: paper sweep projected {sample_h:.1f} CPU-hours with the defaults (first seed, "
          f"1,000-patient sample; {full_h:.0f} for every trial and test image); GPU {gpu_sample:.2f} h "
          f"({gpu_full:.1f} h)", file=sys.stderr)
    return [{"benchmark": "transfer scoring: streamed / per trial", "value": before[0] / streamed[0], "unit": "x",
             "goal": ">= 1", "ok": before[0] >= streamed[0], "detail": detail},
            {"benchmark": "transfer scoring peak memory (MiB)", "value": streamed[1], "unit": "", "goal": "info",
             "ok": True, "detail": f"per trial {before[1]:.0f} MiB: the whole split decoded; streamed: a few shard "
                                   f"files"},
            {"benchmark": "paper model-based steps (CPU-hours)", "value": sample_h, "unit": "",
             "goal": f"<= {GOAL_CPU_H:g}", "ok": sample_h <= GOAL_CPU_H,
             "detail": f"the {MODEL_TRIALS} first-seed models: transfer on a sample of 1,000 test patients "
                       f"(~{SAMPLE_IMAGES} images) + saliency; all {PAPER_TRIALS} models on every test image: "
                       f"{full_h:.0f} CPU-hours"},
            {"benchmark": "paper model-based steps (GPU-hours)", "value": gpu_sample, "unit": "",
             "goal": f"<= {GOAL_GPU_H:g}", "ok": gpu_sample <= GOAL_GPU_H,
             "detail": f"the same, transfer at NVIDIA's published rate (no device lent), saliency on the machine's "
                       f"{GPU_MACHINE_CPUS} CPUs; all models on every test image: {gpu_full:.1f} h"}]


if __name__ == "__main__":
    for row in run(*(int(a) for a in sys.argv[1:3])):
        print(f"{row['benchmark']}: {row['value']:.2f} {row['unit']} (goal {row['goal']}; "
              f"{'ok' if row['ok'] else 'MISSED'}) - {row['detail']}", flush=True)
