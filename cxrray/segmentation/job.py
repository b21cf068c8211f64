"""The lung-segmentation jobs: train the U-Net as a Ray Train job, evaluate it on held-out
patients, and fill in the masks of a manifest that has none.

    python -m cxrray.segmentation train MANIFEST OUT [--size 128 --epochs 40]
    python -m cxrray.segmentation fill MANIFEST OUT/unet.pt OUT2

Training reads only rows with a mask; patients are split 2/3 train, 1/3 test.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from PIL import Image

from cxrray.data.images import read_image, resize
from cxrray.data.manifest import read_manifest
from cxrray.data.shards import decode_manifest, read_split
from cxrray.data.splits import assign_splits
from cxrray.representations.augment import AugmentConfig
from cxrray.segmentation.metrics import overlap_metrics
from cxrray.segmentation.postprocess import clean_mask, mask_quality
from cxrray.segmentation.train import SegConfig, predict_probs, train_unet
from cxrray.segmentation.unet import UNet


def _arrays(ds) -> dict[str, np.ndarray]:
    batches = list(ds.iter_batches(batch_size=256, batch_format="numpy"))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: read the training shard, fit, report the weights (rank 0)."""
    import tempfile

    import ray.train
    import ray.train.torch

    cfg = SegConfig(**{k: v for k, v in config["cfg"].items() if k != "augment"},
                    augment=AugmentConfig(**config["cfg"]["augment"]))
    data = _arrays(ray.train.get_dataset_shard("train"))
    model = train_unet(data["image"], data["mask"], cfg, ray.train.torch.get_device(),
                       wrap=ray.train.torch.prepare_model,
                       on_epoch=lambda e, loss: ray.train.report({"epoch": e, "loss": loss}) if e % 10 == 9 else None)
    with tempfile.TemporaryDirectory() as d:
        if ray.train.get_context().get_world_rank() == 0:
            torch.save(model.state_dict(), Path(d) / "unet.pt")
            ray.train.report({"epoch": cfg.epochs, "done": 1}, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report({"epoch": cfg.epochs, "done": 1})


def train_segmenter(manifest_path: str | Path, out: str | Path, cfg: SegConfig = SegConfig(),
                    num_workers: int = 1, use_gpu: bool = False, split_seed: int = 0) -> pl.DataFrame:
    """Train on 2/3 of the masked patients (Ray Train), test on the rest; returns per-image metrics.

    Writes ``OUT/unet.pt``, ``OUT/seg_config.json``, ``OUT/seg_metrics.csv`` (per image) and
    ``OUT/seg_summary.csv`` (mean per source and overall). Needs Ray started.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, _ = read_manifest(manifest_path)
    rows = assign_splits(rows.filter(pl.col("mask_path") != "").drop("split", strict=False),
                         (2 / 3, 1 / 3), names=("train", "test"), seed=split_seed)
    good, bad = decode_manifest(rows, size=cfg.size, require_masks=True, cover_masks=False)
    if bad.height:
        print(f"[cxrray] {bad.height} masked row(s) unreadable, left out: {bad['error'].to_list()[:3]}")
    shards = out / "shards"
    for stale in (shards, out / "ray" / "unet"):  # a rerun into the same folder trains afresh
        shutil.rmtree(stale, ignore_errors=True)
    good.write_parquet(str(shards), partition_cols=["split"])
    trainer = TorchTrainer(
        _train_worker, train_loop_config={"cfg": asdict(cfg)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="unet", storage_path=str(out / "ray")),
        datasets={"train": read_split(shards / "split=train").materialize()},
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "unet.pt", map_location="cpu")
    torch.save(state, out / "unet.pt")
    (out / "seg_config.json").write_text(json.dumps(asdict(cfg)))
    test = _arrays(read_split(shards / "split=test"))
    model = load_unet(out / "unet.pt")
    probs = predict_probs(model, test["image"])
    per_image = pl.DataFrame([
        {"row": int(r), "source": str(s)} | overlap_metrics(clean_mask(p), m)
        for r, s, p, m in zip(test["row"], test["source"], probs, test["mask"])
    ]).sort("row")
    per_image.write_csv(out / "seg_metrics.csv")
    summary = pl.concat([per_image.group_by("source").agg(pl.exclude("row").mean(), pl.len().alias("images")),
                         per_image.select(pl.lit("all").alias("source"), pl.exclude("row", "source").mean(),
                                          pl.len().alias("images"))], how="diagonal")
    summary.write_csv(out / "seg_summary.csv")
    return per_image


def load_unet(path: str | Path) -> UNet:
    """A trained U-Net from ``unet.pt`` (its config read from ``seg_config.json`` beside it)."""
    cfg = json.loads((Path(path).parent / "seg_config.json").read_text())
    model = UNet(base=cfg["base"], depth=cfg.get("depth", 4))
    model.load_state_dict(torch.load(path, map_location="cpu"))
    return model.eval()


def fill_masks(manifest_path: str | Path, model_path: str | Path, out: str | Path, dilate: int = 0) -> Path:
    """Predict a lung mask for every row without one; write masks and a new manifest.

    Masks are predicted at the U-Net's size, upsampled (bilinear on probabilities)
    to each image's own size, cleaned, and checked by the quality gate; the new
    ``manifest.csv`` (absolute paths) gains ``mask_source`` (human / unet) and
    ``mask_quality`` ('ok' or the gate's reason) columns. ``dilate`` grows each
    predicted mask by that many pixels (COVID-CXNet dilates before cropping).
    """
    out = Path(out).resolve()
    (out / "masks").mkdir(parents=True, exist_ok=True)
    size = json.loads((Path(model_path).parent / "seg_config.json").read_text())["size"]
    model = load_unet(model_path)
    rows, quarantine = read_manifest(manifest_path)
    extra = {"mask_source": [], "mask_quality": []}
    mask_paths = []
    for r in rows.iter_rows(named=True):
        if r["mask_path"]:
            mask_paths.append(r["mask_path"])
            extra["mask_source"].append("human")
            extra["mask_quality"].append("ok")
            continue
        img = read_image(r["image_path"])
        prob = predict_probs(model, resize(img, size)[None])[0]
        prob_full = np.asarray(Image.fromarray(prob.astype(np.float32)).resize(img.shape[::-1],
                                                                                   Image.Resampling.BILINEAR))
        mask = clean_mask(prob_full, dilate=dilate)
        path = out / "masks" / f"row{r['row']:07d}.png"
        Image.fromarray(mask * 255).save(path)
        q = mask_quality(mask)
        mask_paths.append(str(path))
        extra["mask_source"].append("unet")
        extra["mask_quality"].append("ok" if q.ok else q.reason)
    filled = rows.with_columns(pl.Series("mask_path", mask_paths), pl.Series("mask_source", extra["mask_source"]),
                               pl.Series("mask_quality", extra["mask_quality"]))
    manifest = out / "manifest.csv"
    filled.drop("row").write_csv(manifest)
    if quarantine.height:
        quarantine.write_csv(out / "quarantine.csv")
    flagged = filled.filter(pl.col("mask_quality") != "ok")
    for r in flagged.head(10).iter_rows(named=True):
        print(f"[cxrray] mask flagged, row {r['row']} ({r['image_path']}): {r['mask_quality']}")
    return manifest
