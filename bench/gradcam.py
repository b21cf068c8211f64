"""Grad-CAM batched vs one image at a time, side by side in one run, with identical maps.

Goal (issues 7, 8): >= 1.3x on this CPU. ResNet-18 at 128 px, 64 images, batches of 32. Each side
runs three times, interleaved, and keeps its fastest pass: on this shared 2-core VM a single pass of
the batched path varied between 25 and 60 images/s from run to run.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from cxrray.explain.saliency import gradcam
from cxrray.models import build_backbone


def run() -> list[dict]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _ = build_backbone("resnet18", 2, 1, image_size=128)
        x = torch.randn(64, 1, 128, 128, generator=torch.Generator().manual_seed(1))
    classes = np.arange(64) % 2
    gradcam(model, "layer4", x[:4], classes[:4])  # warm-up
    t_single = t_batched = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        single = gradcam(model, "layer4", x, classes, batch_size=1)
        t_single = min(t_single, time.perf_counter() - t)
        t = time.perf_counter()
        batched = gradcam(model, "layer4", x, classes, batch_size=32)
        t_batched = min(t_batched, time.perf_counter() - t)
    diff = float(np.abs(single - batched).max())
    ratio = t_single / t_batched
    return [{"benchmark": "Grad-CAM batched / one at a time", "value": ratio, "unit": "x", "goal": ">= 1.3",
             "ok": ratio >= 1.3 and diff < 1e-4,
             "detail": f"{64 / t_batched:.0f} vs {64 / t_single:.0f} img/s, max map difference {diff:.1e}"}]


if __name__ == "__main__":
    for r in run():
        print(r)
