"""Does a supplied lung mask belong to its image? The U-Net's lungs of the image, compared with the mask.

A mask can pass every shape rule of the gate (two lungs, a plausible area, inside the body) and still be another
patient's: a shifted manifest column, a mask file named after the wrong image. The lung-hiding representations
then hide the wrong region without a word. ``check_masks`` predicts each image's lungs with a trained U-Net
(``python -m cxrray.segmentation train``) and flags a mask whose lung Dice with the prediction is below
``MASK_DICE``; the flagged rows go to ``quarantine.csv`` naming the file, the row and the Dice, and the
manifest it writes keeps the rest. Measured on the 46 human masks of the real fixtures (held-out patients,
``tests/test_segmentation.py``): the false-flag rate on the true masks and the hit rate on shuffled ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cxrray.data.images import ImageReadError, read_image, read_mask, resize
from cxrray.data.manifest import read_manifest
from cxrray.segmentation.metrics import overlap_metrics
from cxrray.segmentation.postprocess import clean_mask
from cxrray.segmentation.train import predict_with_agreement
from cxrray.segmentation.unet import UNet

# Lung Dice between a supplied mask and the U-Net's lungs of the same image below which the mask is taken to
# belong elsewhere. The held-out human masks sit at 0.93 on average (lowest about 0.85); another patient's
# mask, on an aligned frontal CXR, mostly lands lower.
MASK_DICE = 0.85


def mask_dice(model: UNet, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Lung Dice of each supplied mask (N, S, S; bool) with the U-Net's cleaned mask of its image (N, S, S)."""
    probs, _ = predict_with_agreement(model, images)
    return np.array([overlap_metrics(clean_mask(p), m)["lung_dice"] for p, m in zip(probs, masks, strict=True)])


def score_rows(rows: pl.DataFrame, model_path: str | Path, threshold: float = MASK_DICE) -> pl.DataFrame:
    """Per manifest row with a supplied mask: (row, image_path, mask_path, dice, flagged, reason); the reason
    names the row, the mask file, the Dice and the image. Unreadable rows are left to the ingest, which names
    them."""
    from cxrray.segmentation.job import load_unet, seg_config

    model, size = load_unet(model_path), int(seg_config(model_path)["size"])
    images, masks, kept = [], [], []
    for r in rows.filter(pl.col("mask_path") != "").iter_rows(named=True):
        try:
            images.append(resize(read_image(r["image_path"]), size))
            masks.append(resize(read_mask(r["mask_path"]).astype(np.float32), size) > 0.5)
            kept.append(r)
        except ImageReadError:
            continue
    dice = mask_dice(model, np.stack(images), np.stack(masks)) if images else np.zeros(0)
    table = pl.DataFrame({"row": [r["row"] for r in kept], "image_path": [r["image_path"] for r in kept],
                          "mask_path": [r["mask_path"] for r in kept], "dice": dice.astype(float)},
                         schema={"row": pl.Int64, "image_path": pl.Utf8, "mask_path": pl.Utf8, "dice": pl.Float64})
    return table.with_columns((pl.col("dice") < threshold).alias("flagged"), pl.format(
        "row {}: {}: lung Dice {} with the U-Net's lungs of {} (below {}): the mask may belong to another image",
        "row", "mask_path", pl.col("dice").round(3), "image_path", pl.lit(threshold)).alias("reason"))


def quarantine_foreign_masks(rows: pl.DataFrame, quarantine: pl.DataFrame, model_path: str | Path,
                             threshold: float = MASK_DICE) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(rows, quarantine)`` of a read manifest with every row whose mask the U-Net disputes moved to the
    quarantine (its reason naming the file, the row and the Dice), said in the console."""
    table = score_rows(rows, model_path, threshold)
    flagged = table.filter(pl.col("flagged"))
    print(f"[cxrray] mask check: {flagged.height} of {table.height} supplied masks disagree with the U-Net's lungs "
          f"of their image (lung Dice below {threshold}); left out", flush=True)
    for line in flagged["reason"].head(10):
        print(f"    {line}", flush=True)
    moved = flagged.select(pl.col("row").cast(quarantine.schema.get("row", pl.Int64)), "image_path", "reason")
    return (rows.filter(~pl.col("row").is_in(flagged["row"].implode())),
            pl.concat([quarantine, moved.select(quarantine.columns)]).sort("row"))


def check_masks(manifest_path: str | Path, model_path: str | Path, out: str | Path,
                threshold: float = MASK_DICE) -> pl.DataFrame:
    """Score every supplied mask of a manifest against the U-Net; write ``mask_check.csv`` (row, paths, Dice,
    flagged), ``quarantine.csv`` (the flagged rows, with the reason naming file, row and Dice) and
    ``manifest.csv`` without them (absolute paths). Returns the per-row table."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, _ = read_manifest(manifest_path)
    table = score_rows(rows, model_path, threshold)
    table.drop("reason").write_csv(out / "mask_check.csv")
    flagged = table.filter(pl.col("flagged"))
    flagged.select("row", "image_path", "reason").write_csv(out / "quarantine.csv")
    rows.filter(~pl.col("row").is_in(flagged["row"].implode())).drop("row").write_csv(out / "manifest.csv")
    print(f"[cxrray] mask check: {flagged.height} of {table.height} supplied masks flagged (lung Dice with the "
          f"U-Net below {threshold}), listed in {out / 'quarantine.csv'}", flush=True)
    for line in flagged["reason"].head(10):
        print(f"    {line}", flush=True)
    return table
