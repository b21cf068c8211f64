"""The lung-segmentation jobs: train the U-Net as a Ray Train job, evaluate it on held-out
patients, and fill in the masks of a manifest that has none.

    python -m cxrray.segmentation train MANIFEST --out OUT [--size 128 --epochs 70]
    python -m cxrray.segmentation evaluate MANIFEST OUT/unet.pt --out OUT2   # a masked set from other sites
    python -m cxrray.segmentation fill MANIFEST OUT/unet.pt --out OUT2

Training reads only rows with a mask; patients are split 2/3 train, 1/3 held
out to measure the recipe, then the recipe is refit on every mask.
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

from cxrray.data.images import ImageReadError, read_image, resize
from cxrray.data.manifest import read_manifest
from cxrray.data.shards import decode, decode_manifest, read_split
from cxrray.data.splits import assign_splits
from cxrray.representations.augment import AugmentConfig
from cxrray.segmentation.metrics import overlap_metrics
from cxrray.segmentation.postprocess import clean_mask, mask_quality
from cxrray.segmentation.train import SegConfig, predict_with_agreement, train_unet
from cxrray.segmentation.unet import UNet

POOR_DICE = 0.90  # a predicted mask below this lung Dice with the human one is poor: the gate should flag it


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


def _fit(split_dir: Path, cfg: SegConfig, out: Path, name: str, num_workers: int,
         use_gpu: bool) -> tuple[dict, int]:
    """One Ray Train fit of the U-Net on a shard folder; returns its state dict and how many images it saw."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    shutil.rmtree(out / "ray" / name, ignore_errors=True)  # a rerun into the same folder trains afresh
    trainer = TorchTrainer(
        _train_worker, train_loop_config={"cfg": asdict(cfg)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": _worker_cpus(num_workers)}),
        run_config=RunConfig(name=name, storage_path=str(out / "ray")),
        datasets={"train": (train := read_split(split_dir).materialize())},
    )
    checkpoint = trainer.fit().checkpoint
    if checkpoint is None:  # (the worker reports one after its last epoch)
        raise RuntimeError(f"the lung U-Net job {name} ended without a checkpoint")
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / "unet.pt", map_location="cpu"), train.count()


def _worker_cpus(num_workers: int) -> float:
    """CPUs for each training worker: the cluster's CPUs shared between the workers, at most one node's, at least
    one. Ray gives a worker as many torch threads as CPUs: one worker on 2 cores trained the U-Net 1.9x faster with
    both (1.5 against 3.4 s an epoch here) than with Ray's default of one."""
    import ray

    cpus = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(1.0, float(int(min(max(cpus, default=1.0), sum(cpus) / max(num_workers, 1)))))


def score_masks(model: UNet, data: dict[str, np.ndarray], poor_dice: float = POOR_DICE) -> pl.DataFrame:
    """Per image: overlap with the human mask, the test-time agreement, the gate's verdict, and whether the
    mask is poor (lung Dice < ``poor_dice``): what the gate should catch."""
    probs, agreement = predict_with_agreement(model, data["image"])
    rows = []
    for r, s, p, m, a in zip(data["row"], data["source"], probs, data["mask"], agreement, strict=True):
        mask = clean_mask(p)
        q = mask_quality(mask, agreement=float(a))
        rows.append({"row": int(r), "source": str(s)} | overlap_metrics(mask, m)
                    | {"agreement": float(a), "gate": "ok" if q.ok else q.reason})
    return pl.DataFrame(rows).sort("row").with_columns((pl.col("lung_dice") < poor_dice).alias("poor"),
                                                       (pl.col("gate") != "ok").alias("flagged"))


def summarise(per_image: pl.DataFrame) -> pl.DataFrame:
    """Mean metrics per source and overall, with the gate's hit rate (poor masks flagged) and false-flag
    rate (good masks flagged)."""
    def agg(df: pl.DataFrame, source: str) -> dict[str, Any]:
        poor, good = df.filter(pl.col("poor")), df.filter(~pl.col("poor"))
        means = df.select(pl.exclude("row", "source", "gate", "poor", "flagged")).mean().row(0, named=True)
        return {"source": source, "images": df.height} | means | {
            "poor": poor.height, "gate_hits": int(poor["flagged"].sum()), "good_flagged": int(good["flagged"].sum()),
            "gate_hit_rate": poor["flagged"].mean() if poor.height else None,
            "false_flag_rate": good["flagged"].mean() if good.height else None}

    return pl.DataFrame([agg(per_image.filter(pl.col("source") == s), s)
                         for s in sorted(per_image["source"].unique())] + [agg(per_image, "all")])


def train_segmenter(manifest_path: str | Path, out: str | Path, cfg: SegConfig = SegConfig(),
                    num_workers: int = 1, use_gpu: bool = False, split_seed: int = 0,
                    refit: bool = True) -> pl.DataFrame:
    """Fit on 2/3 of the masked patients and score the other third (held-out Dice per source, the quality
    gate's hit rate); then, with ``refit``, fit the same recipe on every mask for ``unet.pt``. Returns the
    per-image held-out metrics.

    Writes ``OUT/unet.pt`` (all masks; the held-out model is ``OUT/unet_heldout.pt``),
    ``OUT/seg_config.json``, ``OUT/seg_metrics.csv`` (per image), ``OUT/seg_summary.csv`` and
    ``OUT/seg_training.json`` (how many images each fit saw). Needs Ray.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, _ = read_manifest(manifest_path)
    rows = assign_splits(rows.filter(pl.col("mask_path") != "").drop("split", strict=False),
                         (2 / 3, 1 / 3), names=("train", "test"), seed=split_seed)
    good, bad = decode_manifest(rows, size=cfg.size, require_masks=True, cover_masks=False)
    if bad.height:
        print(f"[cxrray] {bad.height} masked row(s) unreadable, left out: {bad['error'].to_list()[:3]}")
    shards = out / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    good.write_parquet(str(shards), partition_cols=["split"])
    (out / "seg_config.json").write_text(json.dumps(asdict(cfg)))
    state, seen = _fit(shards / "split=train", cfg, out, "unet_heldout", num_workers, use_gpu)
    torch.save(state, out / "unet_heldout.pt")
    per_image = score_masks(load_unet(out / "unet_heldout.pt"), _arrays(read_split(shards / "split=test")))
    per_image.write_csv(out / "seg_metrics.csv")
    summarise(per_image).write_csv(out / "seg_summary.csv")
    record = {"heldout_fit_images": seen, "heldout_images": per_image.height, "refit_images": 0}
    if refit:
        state, record["refit_images"] = _fit(shards, cfg, out, "unet", num_workers, use_gpu)
    torch.save(state, out / "unet.pt")
    (out / "seg_training.json").write_text(json.dumps(record, indent=1))
    return per_image


def evaluate_segmenter(manifest_path: str | Path, model_path: str | Path, out: str | Path) -> pl.DataFrame:
    """Score a trained U-Net on any masked manifest (sites it never saw): per-image metrics and the summary
    per source in ``OUT/eval_metrics.csv`` and ``OUT/eval_summary.csv``; returns the summary. Needs Ray."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, _ = read_manifest(manifest_path)
    good, _ = decode_manifest(rows.filter(pl.col("mask_path") != ""), size=seg_config(model_path)["size"],
                              require_masks=True, cover_masks=False)
    per_image = score_masks(load_unet(model_path), _arrays(good.map_batches(decode, batch_format="numpy")))
    per_image.write_csv(out / "eval_metrics.csv")
    summary = summarise(per_image)
    summary.write_csv(out / "eval_summary.csv")
    return summary


def seg_config(model_path: str | Path) -> dict[str, Any]:
    """The training config saved beside a ``unet.pt`` (``seg_config.json``): its size, width and depth."""
    return json.loads((Path(model_path).parent / "seg_config.json").read_text())


def load_unet(path: str | Path) -> UNet:
    """A trained U-Net from ``unet.pt`` (its config read from ``seg_config.json`` beside it)."""
    cfg = seg_config(path)
    model = UNet(base=cfg["base"], depth=cfg.get("depth", 4))
    model.load_state_dict(torch.load(path, map_location="cpu"))
    return model.eval()


class _MaskPredictor:
    """A Ray Data actor: the U-Net loaded once, whole batches of images predicted, masks written."""

    def __init__(self, model_path: str, out: str, dilate: int) -> None:
        self.model = load_unet(model_path)
        self.size = seg_config(model_path)["size"]
        self.out, self.dilate = Path(out), dilate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images: list[np.ndarray | None] = []
        errors: list[str] = []
        for path in batch["image_path"]:
            try:
                images.append(read_image(path))
                errors.append("")
            except ImageReadError as exc:
                images.append(None)
                errors.append(f"unreadable: {exc}")
        decoded = {i: img for i, img in enumerate(images) if img is not None}
        readable = list(decoded)
        small = np.stack([resize(decoded[i], self.size) for i in readable]) if readable else np.zeros((0, 8, 8))
        probs, agreement = predict_with_agreement(self.model, small)
        paths, quality, agree = [""] * len(images), list(errors), [float("nan")] * len(images)
        for k, i in enumerate(readable):
            full = np.asarray(Image.fromarray(probs[k].astype(np.float32)).resize(decoded[i].shape[::-1],
                                                                                Image.Resampling.BILINEAR))
            mask = clean_mask(full, dilate=self.dilate)
            path = self.out / f"row{int(batch['row'][i]):07d}.png"
            Image.fromarray(mask * 255).save(path)
            q = mask_quality(mask, agreement=float(agreement[k]))
            paths[i], quality[i], agree[i] = str(path), "ok" if q.ok else q.reason, float(agreement[k])
        return {"row": batch["row"], "mask_path": np.array(paths), "mask_quality": np.array(quality),
                "mask_agreement": np.array(agree)}


def fill_masks(manifest_path: str | Path, model_path: str | Path, out: str | Path, dilate: int = 0,
               batch_size: int = 16, concurrency: int = 1) -> Path:
    """Predict a lung mask for every row without one, in whole batches on Ray Data actors; write masks and
    a new manifest.

    Masks are predicted at the U-Net's size (the mean of its test-time views), upsampled (bilinear on
    probabilities) to each image's own size, cleaned, and checked by the quality gate; the new
    ``manifest.csv`` (absolute paths) gains ``mask_source`` (human / unet), ``mask_quality`` ('ok' or the
    gate's reason) and ``mask_agreement`` columns. ``dilate`` grows each predicted mask by that many pixels
    (COVID-CXNet dilates before cropping).
    """
    import ray.data

    out = Path(out).resolve()
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows, quarantine = read_manifest(manifest_path)
    todo = rows.filter(pl.col("mask_path") == "").select("row", "image_path")
    predicted = pl.DataFrame(schema={"row": pl.Int64, "mask_path": pl.Utf8, "mask_quality": pl.Utf8,
                                     "mask_agreement": pl.Float64})
    if todo.height:
        ds = ray.data.from_arrow(todo.to_arrow()).map_batches(
            _MaskPredictor, fn_constructor_kwargs={"model_path": str(Path(model_path).resolve()),
                                                   "out": str(out / "masks"), "dilate": dilate},
            batch_size=batch_size, batch_format="numpy", concurrency=concurrency)
        predicted = pl.from_pandas(ds.to_pandas()).with_columns(pl.col("row").cast(pl.Int64),
                                                                pl.col("mask_agreement").cast(pl.Float64))
    human = rows.filter(pl.col("mask_path") != "").select(
        "row", "mask_path", pl.lit("ok").alias("mask_quality"), pl.lit(None, pl.Float64).alias("mask_agreement"),
        pl.lit("human").alias("mask_source"))
    masks = pl.concat([human, predicted.with_columns(pl.lit("unet").alias("mask_source")).select(human.columns)])
    filled = rows.drop("mask_path").join(masks, on="row", how="left").sort("row")
    filled = filled.select(*rows.columns, "mask_source", "mask_quality", "mask_agreement")
    manifest = out / "manifest.csv"
    filled.drop("row").write_csv(manifest)
    if quarantine.height:
        quarantine.write_csv(out / "quarantine.csv")
    flagged = filled.filter(pl.col("mask_quality") != "ok")
    print(f"[cxrray] {predicted.height} mask(s) predicted, {flagged.height} flagged by the quality gate")
    for r in flagged.head(10).iter_rows(named=True):
        print(f"[cxrray] mask flagged, row {r['row']} ({r['image_path']}): {r['mask_quality']}")
    return manifest


def fill_missing_masks(rows: pl.DataFrame, model_path: str | Path, out: str | Path,
                       batch_size: int = 16) -> pl.DataFrame:
    """``rows`` of a read manifest with the U-Net's lungs as the mask of every row that has none (``mask_source``
    unet, else human), predicted in this process before Ray starts. The masks go to ``out``/unet-<hash of the
    model's bytes>/ and are predicted once: a resumed run finds them (and the shards made from them) again."""
    import hashlib

    model_path = Path(model_path).resolve()
    folder = Path(out) / f"unet-{hashlib.sha256(model_path.read_bytes()).hexdigest()[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    missing = rows.filter(pl.col("mask_path") == "")
    expected = {int(r): folder / f"row{int(r):07d}.png" for r in missing["row"]}
    todo = missing.filter(~pl.col("row").is_in([r for r, p in expected.items() if p.exists()]))
    if todo.height:
        print(f"[cxrray] --mask-unet: predicting the lungs of {todo.height} image(s) without a mask", flush=True)
        predict = _MaskPredictor(str(model_path), str(folder), dilate=0)
        for start in range(0, todo.height, batch_size):
            part = todo.slice(start, batch_size)
            predict({"row": part["row"].to_numpy(), "image_path": np.array(part["image_path"].to_list())})
    made = {r: str(p) for r, p in expected.items() if p.exists()}  # an unreadable image stays maskless: the
    # ingest quarantines it, naming the file
    before = pl.col("mask_source") if "mask_source" in rows.columns else pl.lit("human")
    return rows.with_columns(
        pl.col("row").replace_strict(made, default=pl.col("mask_path"), return_dtype=pl.Utf8).alias("mask_path"),
        pl.when(pl.col("row").is_in(list(made))).then(pl.lit("unet")).otherwise(before).alias("mask_source"))
