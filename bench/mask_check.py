#!/usr/bin/env python
"""Does the mask check (``cxrray.segmentation.maskcheck``) tell a mask of another image from the image's own?

Every one of the 46 human lung masks of the real fixtures (cxr-real-mini) is scored by a U-Net that never saw
its patient: 3-fold cross-fitting over patients, the recipe of ``python -m cxrray.segmentation train`` at 128 px.
False flags: own masks below ``MASK_DICE``. Hits: each image given the mask of another patient's image (the next
one in the manifest from a different patient), below ``MASK_DICE``. Goals: false flags <= 10 %, hits >= 80 %.

    python bench/mask_check.py            # about 8 minutes on 2 CPUs (three U-Net fits)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from cxrray.data.images import read_image, read_mask, resize
from cxrray.data.manifest import load_manifest
from cxrray.data.splits import assign_splits
from cxrray.segmentation.maskcheck import MASK_DICE, mask_dice
from cxrray.segmentation.train import SegConfig, train_unet

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cxr-real-mini" / "manifest.csv"
FOLDS = 3


def run(folds: int = FOLDS, cfg: SegConfig = SegConfig(size=128, epochs=70)) -> list[dict]:
    t0 = time.time()
    rows = load_manifest(FIXTURE).filter(pl.col("mask_path") != "")
    parts = assign_splits(rows, tuple([1 / folds] * folds), names=tuple(f"f{k}" for k in range(folds)), seed=0)
    images = np.stack([resize(read_image(p), cfg.size) for p in parts["image_path"]])
    masks = np.stack([resize(read_mask(p).astype(np.float32), cfg.size) > 0.5 for p in parts["mask_path"]])
    patients = parts["patient_id"].to_list()
    n = len(patients)
    other = np.array([next(j % n for j in range(i + 1, i + n) if patients[j % n] != patients[i]) for i in range(n)])
    own, shuffled = np.full(n, np.nan), np.full(n, np.nan)
    for k in range(folds):
        test = (parts["split"] == f"f{k}").to_numpy()
        model = train_unet(images[~test], masks[~test].astype(np.float32), cfg)
        own[test] = mask_dice(model, images[test], masks[test])
        shuffled[test] = mask_dice(model, images[test], masks[other[test]])
    false_flags, hits = float((own < MASK_DICE).mean()), float((shuffled < MASK_DICE).mean())
    detail = (f"{n} images, {len(set(patients))} patients, {folds}-fold by patient; own Dice {own.mean():.3f} "
              f"(lowest {own.min():.3f}), another patient's {shuffled.mean():.3f} (highest {shuffled.max():.3f}); "
              f"threshold {MASK_DICE}; {time.time() - t0:.0f} s")
    return [{"benchmark": "mask check: human masks flagged", "value": 100 * false_flags, "unit": "%",
             "goal": "<= 10", "ok": false_flags <= 0.10, "detail": detail},
            {"benchmark": "mask check: foreign masks flagged", "value": 100 * hits, "unit": "%", "goal": ">= 80",
             "ok": hits >= 0.80, "detail": detail}]


if __name__ == "__main__":
    for r in run():
        status = "ok" if r["ok"] else "MISSED"
        print(f"{r['benchmark']}: {r['value']:.1f} % (goal {r['goal']}; {status}) - {r['detail']}")
