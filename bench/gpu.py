#!/usr/bin/env python
"""The GPU path of a trial, measured: shards -> the inline trial's streaming reader (``LocalSplit``: files
decoded ahead by reader threads, a local shuffle buffer, batches drawn ahead in a thread, stored integer pixels)
-> Kornia augmentation + representation on the GPU -> ResNet-50 (bf16 autocast, channels_last, SGD), in img/s,
also the reader alone and the input path alone (no model), side by side with the
same model fed synthetic tensors already on the GPU (the bare model). Goals: >= 0.90x of the bare model and
>= 4,000 img/s at 224 px on one H100-class GPU (NVIDIA's published ResNet-50 AMP training on an A100: about
2,470 img/s). Also checks that the Kornia ops on CUDA equal the CPU ones with the same sampled augmentation
(within ``KORNIA_ATOL`` in normalised units: float32 resampling arithmetic differs between the devices, a
differently sampled augmentation differs by tenths) and that validation under autocast gives the fp32
scores (max |dp| <= 0.02, equal AUROC +- 0.01).

    python bench/gpu.py                 # needs CUDA; without it says so and exits 0
    python bench/gpu.py --images 2048 --batch 256 --steps 60
    python bench/gpu.py --device cpu --images 64 --size 64 --batch 16 --steps 3   # a dry run of the logic

Then the model-based analysis steps on the same machine (``model_steps``): real trials of several backbones
trained one epoch each on the GPU (``run_trial``, the inline trial's path without Tune), the transfer matrix's
scoring (``ScoreJob``: the test split streamed once, every hide-and-seek representation) timed per backbone in
bf16 and fp32 with their scores compared, and one trial's saliency step (Grad-CAM, randomisation check, ROAD)
on one CPU, as its Ray task runs; the paper sweep's model-based steps projected from these rates. Where Ray is
not installed (the lent GPU machine has none), the shards are written in this process by the same decode and
writer that Ray Data's ingest runs (``load_and_encode``, ``ShardWriter``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_steps import MODEL_BACKBONES, copies_of, model_steps, model_verdict, projection, timed
from model_steps import GOAL_GPU_H

GOAL_RATIO, GOAL_IMG_S = 0.90, 4000.0
# 1e-3 normalised = 2.5e-4 of the image range, one 12-bit grey level. An H200 measured 1.05e-4 with TF32 on or off
# (the first goal, 1e-5, assumed the devices' bilinear resampling to round alike; they do not)
KORNIA_ATOL = 1e-3


def _rate(model, optimizer, batches, steps: int, device, amp: bool) -> float:
    """Images/s over ``steps`` optimiser steps (after two warm-up steps), synchronised on the device."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seen, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        step(x, y)
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def make_shards(manifest, out: Path, size: int) -> str:
    """The manifest's shards under ``out``: by Ray Data's ingest where Ray is installed, else in this process by
    the same per-block decode and the same writer (the same shard files); returns which."""
    try:
        import ray
        import ray.data
    except ImportError:
        import pyarrow as pa

        from cxrray.data.ingest import ShardWriter
        from cxrray.data.manifest import REQUIRED_COLUMNS
        from cxrray.data.shards import HASH_COLUMNS, load_and_encode

        rows, writer = manifest.sort("row").select("row", *REQUIRED_COLUMNS, "split"), ShardWriter(out)
        for i in range(0, rows.height, 32):
            block = load_and_encode({c: rows[c].to_numpy()[i:i + 32] for c in rows.columns}, size=size,
                                    require_masks=True, cover_masks=True, dtype="uint16")
            bad = [e for e in block.pop("error") if e]
            if bad:
                raise RuntimeError(f"phantom rows failed to decode: {bad[:3]}") from None
            table = pa.table({k: v for k, v in block.items() if k not in ("image_path", *HASH_COLUMNS)})
            for split in ("train", "val", "test"):
                keep = [j for j, s in enumerate(block["split"]) if s == split]
                if keep:
                    writer.add(split, table.take(keep))
        writer.close()
        return "in process (no Ray here)"
    from cxrray.data.ingest import ingest

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ingest(manifest, out, image_size=size)
    finally:
        ray.shutdown()
    return "Ray Data"


def phantom(work: Path, images: int, size: int):
    """A split phantom manifest of about ``images`` images (native side >= 256 px)."""
    from cxrray.data.manifest import load_manifest
    from cxrray.data.phantom import write_phantom
    from cxrray.data.splits import assign_splits

    return assign_splits(load_manifest(write_phantom(work / "ph", n_patients=max(images // 2, 12), seed=0,
                                                     size=max(size, 256))))


def measure(images: int, size: int, batch: int, steps: int, device_name: str, work: Path, copies: int = 8) -> dict:
    """The trial input path against the bare model (its train split read ``copies`` times over: an epoch of a
    real split, not a restart every few batches), the reader and the input path alone; Kornia CUDA against CPU,
    autocast against fp32. The shards stay in ``work/shards`` for ``model_steps``."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from cxrray.data.shards import LocalSplit, read_split_local
    from cxrray.data.tasks import TASKS
    from cxrray.models import build_backbone
    from cxrray.representations.augment import AugmentConfig
    from cxrray.training.heads import make_head
    from cxrray.training.loop import InputPipeline, predict

    device = torch.device(device_name)
    amp = device.type == "cuda"
    head, pipe = make_head(TASKS.get("CL2")), InputPipeline("lungs_removed", augment=AugmentConfig())
    out: dict = {"device": torch.cuda.get_device_name(0) if amp else "cpu", "size": size, "batch": batch}
    t0 = time.perf_counter()
    out["shards_by"] = make_shards(phantom(work, images, size), work / "shards", size)
    out["shards_s"] = time.perf_counter() - t0
    train = LocalSplit(copies_of(work / "shards" / "train", work / "train-copies", copies), stored_pixels=True)

    def model():
        m, _ = build_backbone("resnet50", 2, 1, image_size=size)
        m = m.to(device).to(memory_format=torch.channels_last)
        return m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    # a CUDA trial's reader (runner.PIN_MEMORY): batches page-locked in the thread that draws them ahead
    pinned = LocalSplit(train.files[0].parent, stored_pixels=True, pin_memory=amp)

    def batches(split=train):
        while True:
            yield from split.iter_batches(batch_size=batch, batch_format="numpy", drop_last=True,
                                          local_shuffle_buffer_size=4 * batch, local_shuffle_seed=0)  # a trial's

    def full_path(split=pinned):
        gen = torch.Generator().manual_seed(0)
        for b in batches(split):
            x = pipe.to_inputs(b, device, gen).contiguous(memory_format=torch.channels_last)
            yield x, head.targets(b).to(device)

    # the input path alone: the reader, then the reader and the GPU's augmentation + representation
    def wide():  # the reader with 4 files ahead (4 threads): does reading scale with threads?
        wide = LocalSplit(train.files[0].parent, prefetch_files=4, stored_pixels=True)
        while True:
            yield from wide.iter_batches(batch_size=batch, drop_last=True, local_shuffle_buffer_size=4 * batch,
                                         local_shuffle_seed=0)

    for key, make in (("reader_img_s", batches), ("reader4_img_s", wide), ("inputs_img_s", full_path)):
        it = make()
        next(it)  # started: the first files read
        _, s = timed(lambda it=it: [next(it) for _ in range(steps)])
        out[key] = steps * batch / s

    x0 = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y0 = torch.randint(0, 2, (batch,), device=device)

    def bare():
        while True:
            yield x0, y0

    rates = {}
    paths = (("bare", bare), ("full", full_path), ("unpinned", lambda: full_path(train)), ("bare2", bare))
    for name, make in paths:
        m, opt = model()
        rates[name] = _rate(m, opt, make(), steps, device, amp)
    out |= {"bare_img_s": max(rates["bare"], rates["bare2"]), "full_img_s": rates["full"],
            "full_unpinned_img_s": rates["unpinned"]}
    out["ratio"] = out["full_img_s"] / out["bare_img_s"]

    # Kornia on the device equals Kornia on the CPU, with the same sampled augmentation
    sample = read_split_local(work / "shards" / "test", limit=16)
    cpu = pipe.to_inputs(sample, torch.device("cpu"), torch.Generator().manual_seed(1))
    dev = pipe.to_inputs(sample, device, torch.Generator().manual_seed(1)).cpu()
    out["kornia_max_abs_diff"] = float((cpu - dev).abs().max())
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:  # the same without TF32 (cuDNN's default for float32 convolutions on Ampere and later)
        dev = pipe.to_inputs(sample, device, torch.Generator().manual_seed(1)).cpu()
        out["kornia_max_abs_diff_no_tf32"] = float((cpu - dev).abs().max())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32

    # validation under autocast gives the fp32 scores
    m, _ = model()
    val = LocalSplit(work / "shards" / "val")
    fp32 = predict(m, val.iter_batches(batch_size=batch, batch_format="numpy"), pipe, head, device)
    bf16 = predict(m, val.iter_batches(batch_size=batch, batch_format="numpy"), pipe, head, device, amp=amp)
    out["autocast_max_abs_dp"] = float(np.abs(fp32["prob"] - bf16["prob"]).max())
    y = fp32["target"]
    if len(set(y.tolist())) == 2:
        auc = [roc_auc_score(y, p["prob"][:, 1]) for p in (fp32, bf16)]
        out["autocast_auroc_diff"] = abs(auc[0] - auc[1])
    return out


def verdict(r: dict) -> list[str]:
    checks = [(f"full path / bare model {r['ratio']:.2f}x", r["ratio"] >= GOAL_RATIO, f">= {GOAL_RATIO}"),
              (f"full path {r['full_img_s']:.0f} img/s at {r['size']} px (batches page-locked; without: "
               f"{r['full_unpinned_img_s']:.0f})", r["full_img_s"] >= GOAL_IMG_S, f">= {GOAL_IMG_S:.0f}"),
              (f"input path alone {r['inputs_img_s']:.0f} img/s (reader {r['reader_img_s']:.0f}; with 4 files "
               f"ahead {r['reader4_img_s']:.0f})",
               r["inputs_img_s"] >= r["bare_img_s"], f">= the bare model's {r['bare_img_s']:.0f}"),
              (f"Kornia CUDA vs CPU max |diff| {r['kornia_max_abs_diff_no_tf32']:.1e} without TF32 "
               f"({r['kornia_max_abs_diff']:.1e} with)", r["kornia_max_abs_diff_no_tf32"] <= KORNIA_ATOL,
               f"<= {KORNIA_ATOL:g}"),
              (f"autocast vs fp32 scores max |dp| {r['autocast_max_abs_dp']:.3f}", r["autocast_max_abs_dp"] <= 0.02,
               "<= 0.02")]
    if "autocast_auroc_diff" in r:
        checks.append((f"autocast vs fp32 AUROC diff {r['autocast_auroc_diff']:.4f}", r["autocast_auroc_diff"] <= 0.01,
                       "<= 0.01"))
    return [f"{'ok ' if ok else 'NO '} {text} (goal {goal})" for text, ok, goal in checks]


def measure_all(images: int, size: int, batch: int, steps: int, device: str, backbones: tuple[str, ...],
                copies: int, json_path: Path | None = None, saliency_wait: float = 300.0) -> dict:
    """``measure`` then ``model_steps`` on its shards, then ``projection``; each part printed (and written to
    ``json_path``) as it finishes, so a run cut short keeps what it measured."""
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(images, size, batch, steps, device, Path(tmp), copies)
        _show(r, json_path, "input path")
        if backbones:
            r["model_steps"] = model_steps(Path(tmp), size, device, backbones, copies, saliency_wait)
            r["projection"] = projection(r["model_steps"])
            _show(r, json_path, "model steps")
    return r


def _show(r: dict, json_path: Path | None, part: str) -> None:
    print(f"--- {part} done: {json.dumps(r)}", flush=True)
    if json_path:
        json_path.write_text(json.dumps(r, indent=1))


def run() -> list[dict]:
    """``make bench`` rows: the measured ratio and rate on CUDA, or one info row saying there is no GPU."""
    import torch

    if not torch.cuda.is_available():
        return [{"benchmark": "GPU path (bench/gpu.py)", "value": 0.0, "unit": "-", "goal": "info", "ok": True,
                 "detail": "no CUDA device here: not measured"}]
    r = measure_all(2048, 224, 256, 40, "cuda", MODEL_BACKBONES, 10)
    p = r["projection"]["defaults"]["total_h"]
    return [{"benchmark": "GPU: full path / bare ResNet-50", "value": r["ratio"], "unit": "x",
             "goal": f">= {GOAL_RATIO}", "ok": r["ratio"] >= GOAL_RATIO, "detail": "; ".join(verdict(r)[2:])},
            {"benchmark": "GPU: full path img/s (224 px)", "value": r["full_img_s"], "unit": "img/s",
             "goal": f">= {GOAL_IMG_S:.0f}", "ok": r["full_img_s"] >= GOAL_IMG_S, "detail": r["device"]},
            {"benchmark": "GPU: paper model-based steps (h)", "value": p, "unit": "", "goal": f"<= {GOAL_GPU_H:g}",
             "ok": p <= GOAL_GPU_H, "detail": "; ".join(model_verdict(r))}]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2048, help="phantom images ingested (about 60 %% train)")
    p.add_argument("--size", type=int, default=224, help="model input side in px")
    p.add_argument("--batch", type=int, default=256, help="images per step")
    p.add_argument("--steps", type=int, default=40, help="timed steps per path")
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a dry run of its logic)")
    p.add_argument("--backbones", nargs="*", default=list(MODEL_BACKBONES),
                   help="backbones of the model-based steps (none: skip them)")
    p.add_argument("--copies", type=int, default=10, help="test split copies the transfer scoring reads")
    p.add_argument("--saliency-wait", type=float, default=300.0,
                   help="seconds the saliency step may run beside the model steps (0: not measured)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (run it where a GPU is)")
        return 0
    r = measure_all(args.images, args.size, args.batch, args.steps, args.device, tuple(args.backbones), args.copies,
                    args.json, args.saliency_wait)
    print("\n".join(verdict(r) + (model_verdict(r) if "model_steps" in r else [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
