"""The model-based analysis steps on a GPU machine, for ``bench/gpu.py``: real trials trained there, the transfer
matrix's scoring timed per backbone in bf16 and float32, one trial's saliency step on one CPU beside them, and
the paper sweep's model-based steps projected from those rates. (No ``run()``: ``make bench`` runs
``bench/gpu.py``, which calls these.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from model_steps import GOAL_GPU_H, GPU_MACHINE_CPUS, MODEL_TRIALS, PAPER_IMAGES, PAPER_TRIALS, SAMPLE_IMAGES

ROOT = Path(__file__).resolve().parents[1]
SALIENCY = ("import sys, time, torch; torch.set_num_threads(1); from cxrray.explain.saliency import trial_saliency; "
            "t = time.process_time(); trial_saliency(sys.argv[1], sys.argv[2], limit=32); "
            "print(time.process_time() - t)")  # a saliency Ray task: one CPU, 32 images (the analysis' default)
MODEL_BACKBONES = ("alexnet", "vgg11", "resnet18", "resnet50", "densenet121", "efficientnet_b1")


class _Session:
    """One trial on this machine's device, as an inline trial runs minus Tune: the splits an inline trial reads
    (``runner.trial_datasets``), no checkpoint kept (one epoch)."""

    rank, node_id = 0, ""

    def __init__(self, data, device) -> None:
        from cxrray.tuning.runner import trial_datasets

        self.datasets, self.device = trial_datasets(data, inline=True), device

    def prepare_model(self, model):
        return model.to(self.device)

    def dataset(self, split: str):
        return self.datasets[split]

    def load_state(self) -> None:
        return None

    def report(self, metrics, state) -> None:
        return None

    def finished(self) -> None:
        return None


def copies_of(split: Path, to: Path, copies: int) -> Path:
    """A folder of ``copies`` links to every shard file of ``split`` (a bigger split without more phantom)."""
    to.mkdir()
    for k in range(copies):
        for f in sorted(split.glob("*.parquet")):
            (to / f"{f.stem}-{k}.parquet").symlink_to(f.resolve())
    return to


def timed(fn):
    """(result, wall seconds) of ``fn()``, synchronised on the GPU when there is one."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - t0


def model_steps(work: Path, size: int, device_name: str, backbones: tuple[str, ...], copies: int,
                saliency_wait: float = 300.0) -> dict:
    """Real trials of ``backbones`` (one epoch each on the device) in a run folder over ``work/shards``; then per
    backbone the transfer scoring of its model on the test split copied ``copies`` times (every representation),
    in bf16 and in fp32 (after a warm-up on the validation split); meanwhile the first trial's saliency step runs
    on one CPU in another process (its CPU-seconds; NaN when not done ``saliency_wait`` s after it started)."""
    import dataclasses

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from cxrray.config import DataRef, RunLayout, TrainRecipe, TrialContext, TrialSpec
    from cxrray.explain.scoring import ScoreJob, score_models
    from cxrray.records import TrialRecord
    from cxrray.training.worker import run_trial

    device = torch.device(device_name)
    layout = RunLayout(work / "run")
    shards = layout.shards("bench", size)
    shards.parent.mkdir(parents=True, exist_ok=True)
    (work / "shards").rename(shards)
    big = copies_of(shards / "test", work / "test-copies", copies)  # enough images to time a fast GPU
    out: dict = {"backbones": {}}
    saliency, saliency_by = None, 0.0
    precision = "bf16" if device.type == "cuda" else "fp32"
    for name in backbones:
        spec = TrialSpec(study="hide_seek", data_id="bench", representation="lungs_removed", backbone=name,
                         image_size=size, recipe=TrainRecipe(epochs=1, batch_size=64, lr=1e-4))
        ctx = TrialContext(spec=spec, run_dir=str(layout.root), data=DataRef("bench", str(shards), (1.0, 1.0),
                                                                            image_size=size), wandb="disabled",
                           checkpoint_every_s=1e9, use_gpu=device.type == "cuda")
        _, train_s = timed(lambda ctx=ctx: run_trial(ctx, _Session(ctx.data, device)))
        if saliency is None and saliency_wait > 0:  # saliency: one CPU beside the GPU, as its Ray task
            saliency = subprocess.Popen([sys.executable, "-c", SALIENCY, str(layout.root), spec.trial_id],
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT)
            saliency_by, out["saliency_backbone"] = time.monotonic() + saliency_wait, name
        record = TrialRecord.read(layout.trial(spec.trial_id))
        job = ScoreJob(str(layout.root), str(shards / "val"), (spec.trial_id,), device_name, precision,
                       batch_size=256)
        score_models(job)  # warm-up: cuDNN's algorithm choice, the allocator
        scored, bf16_s = timed(lambda job=job: score_models(dataclasses.replace(job, split_dir=str(big))))
        full, fp32_s = timed(lambda job=job: score_models(dataclasses.replace(job, split_dir=str(big),
                                                                               precision="fp32")))
        p_low, p_full = (s.probs[spec.trial_id]["original"][:, 1] for s in (scored, full))
        y = scored.labels == "CVP"
        passes = sum(len(p) for p in scored.probs[spec.trial_id].values())
        out["backbones"][name] = {
            "train_epoch_s": train_s, "test_auroc": record.metrics.get("test_auroc", float("nan")),
            "passes": passes, "bf16_pass_s": passes / bf16_s, "fp32_pass_s": passes / fp32_s,
            "max_abs_dp": float(np.abs(p_low - p_full).max()),
            "auroc_diff": abs(roc_auc_score(y, p_low) - roc_auc_score(y, p_full)) if 0 < y.sum() < len(y) else 0.0}
        out.setdefault("trial_ids", {})[name] = spec.trial_id
    if saliency is None:
        out["saliency_cpu_s"], out["saliency_backbone"] = float("nan"), ""
        return out
    try:
        text, _ = saliency.communicate(timeout=max(saliency_by - time.monotonic(), 1))
        out["saliency_cpu_s"] = float(text.split()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        saliency.kill()
        out["saliency_cpu_s"] = float("nan")  # not finished in time: the projection says so
    return out


def projection(m: dict) -> dict:
    """The paper sweep's model-based steps on one GPU machine from ``model_steps``' rates: transfer scoring at the
    mean time per pass of the measured backbones, saliency on the machine's CPUs (one Ray task each); with the
    analysis' defaults (first seed's models, a 1,000-patient sample) and for every model and test image."""
    rates = [b["fp32_pass_s"] for b in m["backbones"].values()]  # the analysis scores in float32 (``Placement``)
    s_per_pass = sum(1 / r for r in rates) / len(rates)
    out = {}
    for key, (trials, images) in {"defaults": (MODEL_TRIALS, SAMPLE_IMAGES),
                                  "everything": (PAPER_TRIALS, PAPER_IMAGES)}.items():
        transfer_h = trials * 5 * images * s_per_pass / 3600
        saliency_h = trials * m["saliency_cpu_s"] / GPU_MACHINE_CPUS / 3600
        out[key] = {"transfer_h": transfer_h, "saliency_h": saliency_h, "total_h": transfer_h + saliency_h}
    return out


def model_verdict(r: dict) -> list[str]:
    """One line per backbone (scoring rates, bf16 against fp32), saliency, the projection against the goal."""
    m, lines = r["model_steps"], []
    for name, b in m["backbones"].items():
        lines.append(f"{name}: transfer scoring {b['bf16_pass_s']:.0f} passes/s bf16, {b['fp32_pass_s']:.0f} fp32 "
                     f"({b['passes']} passes); bf16 vs fp32 max |dp| {b['max_abs_dp']:.3f}, AUROC diff "
                     f"{b['auroc_diff']:.4f}; one epoch {b['train_epoch_s']:.1f} s, test AUROC {b['test_auroc']:.2f}")
    lines.append(f"saliency ({m['saliency_backbone']}, 32 images, one CPU thread): {m['saliency_cpu_s']:.1f} CPU-s")
    for key, p in r["projection"].items():
        ok = p["total_h"] <= GOAL_GPU_H or key == "everything"
        lines.append(f"{'ok ' if ok else 'NO '} paper model-based steps ({key}): {p['total_h']:.2f} h on one GPU "
                     f"machine (transfer {p['transfer_h']:.2f} h, saliency {p['saliency_h']:.2f} h)"
                     + (f" (goal <= {GOAL_GPU_H:g})" if key == "defaults" else ""))
    return lines
