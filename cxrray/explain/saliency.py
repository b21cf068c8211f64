"""Grad-CAM from saved trial models: where does the classifier look, and how much of it is lungs?

Maps come from the grad-cam package (``GradCAM``, batched; ``HiResCAM`` for a
backbone whose head flattens the feature map, such as the base CNN), at each backbone's
declared target layer, for the predicted class and the counterfactual class
(the other class of a binary task; the runner-up otherwise). The saliency mass
inside a region is sum(map * region) / sum(map): 1.0 when all of it lies in the
lungs, 0.0 when none does. Per cell the mean share gets a seeded bootstrap CI.
Nothing retrains: the model is the trial's ``TrialDir.model``, the images the trial's
test shard, the preprocessing the trial's own ``InputPipeline``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from cxrray.config import RunLayout, TrialSpec
from cxrray.data.shards import read_split_local
from cxrray.data.tasks import TASKS
from cxrray.explain.cam_geometry import MIN_CELLS, Geometry, choose_layer, layer_geometry, place
from cxrray.explain.sanity import ROAD_IMAGES, randomisation_test, road
from cxrray.models.backbones import CamMethod
from cxrray.models.card import ModelCard, load_model
from cxrray.records import TrialRecord
from cxrray.registry import UserError
from cxrray.representations import REPRESENTATIONS, InputPipeline, lung_box, out_channels


def saliency_mass(cam: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside ``region`` ((B, H, W) maps and regions); NaN for an empty map."""
    cam = np.asarray(cam, np.float64).reshape(len(cam), -1)
    region = np.asarray(region, bool).reshape(len(region), -1)
    total = cam.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (cam * region).sum(1) / total, np.nan)


def _native(cam_class):
    """A pytorch-grad-cam method that returns maps on the target layer's own grid (no resize to the input),
    so that ``cam_geometry.place`` can put each cell where it really is."""

    class Native(cam_class):
        def get_target_width_height(self, input_tensor: torch.Tensor):
            rows, cols = self.activations_and_grads.activations[0].shape[-2:]
            return int(cols), int(rows)

    return Native


def gradcam(model: torch.nn.Module, layer: str, x: torch.Tensor, classes: np.ndarray,
            batch_size: int = 32, method: CamMethod = "gradcam", geometry: Geometry | None = None) -> np.ndarray:
    """Class-activation maps (B, H, W) in [0, 1] for ``classes[i]`` of image i, ``batch_size`` images per
    pass: ``method`` "gradcam" (Grad-CAM) or "hirescam" (HiResCAM, for flatten heads). Each map is computed
    on the layer's grid and placed by the layer's measured geometry (``cam_geometry``), not stretched."""
    from pytorch_grad_cam import GradCAM, HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = {"gradcam": GradCAM, "hirescam": HiResCAM}
    if method not in methods:
        raise ValueError(f"unknown CAM method {method!r}; valid: {sorted(methods)}")
    if not len(x):
        return np.zeros((0, *x.shape[-2:]))
    geometry = geometry or layer_geometry(model, layer, x.shape)
    model.eval()
    out = []
    with _native(methods[method])(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            out.append(cam(input_tensor=xb, targets=[ClassifierOutputTarget(int(c)) for c in classes[i:i + len(xb)]]))
    return place(np.concatenate(out), geometry, (int(x.shape[-2]), int(x.shape[-1])))


def load_trial(run_dir: Path, trial_id: str) -> tuple[TrialSpec, ModelCard, torch.nn.Module]:
    """The trial's spec, its model card and its best-on-validation model (``models.card.load_model``: on the CPU,
    in eval mode); a run of an older build without ``model.json`` gets the card its spec implies."""
    trial = RunLayout(Path(run_dir)).trial(trial_id)
    if not trial.meta.exists():
        raise UserError(f"trial {trial_id}: model missing (no {trial.meta})")
    spec = TrialRecord.read(trial).spec
    task = TASKS.get(spec.task)
    implied = ModelCard.of(spec.trial_id, spec.backbone, spec.representation, spec.task, spec.image_size,
                           out_channels(spec.representation), task.num_outputs, task.multilabel, spec.mask_dilation)
    card, model = load_model(trial, implied)
    return spec, card, model


def _test_images(run_dir: Path, spec: TrialSpec, limit: int) -> dict[str, np.ndarray]:
    """Up to ``limit`` test images of the trial, stratified by the task's class (an even share of each, as far
    as it has them; manifest-row order within a class), decoded from its shards."""
    batch = read_split_local(RunLayout(Path(run_dir)).shards_of(spec) / "test", max(limit * 20, limit))
    task = TASKS.get(spec.task)
    labels = np.asarray([task.class_index(str(x)) for x in batch["label"]])
    classes = sorted(set(labels))
    per, picks = max(limit // max(len(classes), 1), 1), []
    for c in classes:
        picks.extend(np.flatnonzero(labels == c)[:per].tolist())
    chosen = set(picks)
    rest = [i for i in range(len(labels)) if i not in chosen]
    keep = np.sort(np.asarray(picks + rest[:max(limit - len(picks), 0)], int))
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def trial_saliency(run_dir: str | Path, trial_id: str, limit: int = 64, batch_size: int = 32, lime: int = 0,
                   lime_samples: int = 300) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Per test image: predicted and counterfactual class, and each map's mass inside the lungs and the
    lung box. Also returns the maps and images (for grids). ``lime``: also explain the first ``lime``
    images with LIME (``lime_share_pred``; NaN for the others)."""
    run_dir = Path(run_dir)
    spec, card, model = load_trial(run_dir, trial_id)
    task = TASKS.get(spec.task)
    if task.kind != "single":
        raise ValueError(f"trial {trial_id}: Grad-CAM per class needs a softmax task, not {task.name}")
    batch = _test_images(run_dir, spec, limit)
    pipe = InputPipeline(card.representation, card.mean, card.std, mask_dilation=card.mask_dilation)
    x = pipe.to_inputs(batch, torch.device("cpu"))
    with torch.no_grad():
        prob = card.probs(model(x)).numpy()
    order = np.argsort(-prob, 1)
    pred = order[:, 0]
    other = 1 - pred if task.num_classes == 2 else order[:, 1]
    seen = REPRESENTATIONS.get(spec.representation).seen_mask(torch.as_tensor(batch["mask"])[:, None].float())
    lungs = seen[:, 0].numpy() > 0  # the lungs where the model saw them (a crop moves them with the image)
    box = lung_box(seen)[:, 0].numpy()
    layer, geometry = choose_layer(model, (card.cam_layer, *card.cam_layers), x.shape)
    if layer is None:  # too few cells to say where: no number, and the reason
        empty = np.full((len(x), *x.shape[-2:]), np.nan)
        maps = {"pred": empty, "counter": empty}
        note = (f"not interpretable at this resolution (map {geometry.cells[0]} x {geometry.cells[1]} cells, fewer "
                f"than {MIN_CELLS} a side)")
    else:
        maps = {"pred": gradcam(model, layer, x, pred, batch_size, card.cam_method, geometry),
                "counter": gradcam(model, layer, x, other, batch_size, card.cam_method, geometry)}
        note = ""
    rho, road_score = np.full(len(x), np.nan), np.full(len(x), np.nan)
    if layer is not None:  # the sanity checks (``sanity``): does the map depend on the model, and on its evidence?
        method = card.cam_method
        rho = randomisation_test(maps["pred"], lambda m: gradcam(m, layer, x, pred, batch_size, method, geometry),
                                 model, layer, seed=spec.seed)
        k = min(ROAD_IMAGES, len(x))
        road_score[:k] = road(model, x[:k], maps["pred"][:k], pred[:k])
    flat = lambda m: m.reshape(len(m), -1)  # noqa: E731
    rows = pl.DataFrame({"trial_id": trial_id, "row": batch["row"], "patient_id": batch["patient_id"],
                         "label": batch["label"], "pred": [task.classes[i] for i in pred],
                         "counter": [task.classes[i] for i in other],
                         "lung_share_pred": saliency_mass(maps["pred"], lungs),
                         "box_share_pred": saliency_mass(maps["pred"], box),
                         "lung_share_counter": saliency_mass(maps["counter"], lungs),
                         "lung_area": flat(lungs).mean(1), "box_area": flat(box).mean(1),
                         "randomisation_rho": rho, "road": road_score,
                         "cam_layer": layer or "", "cam_cells": f"{geometry.cells[0]}x{geometry.cells[1]}",
                         "note": note})
    if lime:
        from cxrray.explain.lime_maps import lime_maps

        n = min(lime, len(x))
        maps["lime"] = lime_maps(model, x[:n], pred[:n], card.probs, hide_value=(0.0 - card.mean) / card.std,
                                 num_samples=lime_samples, seed=int(batch["row"][0]))
        share = np.full(len(x), np.nan)
        share[:n] = saliency_mass(maps["lime"], lungs[:n])
        rows = rows.with_columns(pl.Series("lime_share_pred", share))
    seen_image = x[:, 0].numpy() * np.asarray(card.std, np.float32).ravel()[0] + np.asarray(card.mean).ravel()[0]
    truth = np.asarray([task.classes[task.class_index(str(v))] for v in batch["label"]])
    return rows, maps | {"image": batch["image"], "seen": seen_image, "mask": lungs.astype(np.uint8),
                         "classes": np.asarray(task.classes)[pred], "truth": truth,
                         "prob": prob.max(1), "all_classes": tuple(task.classes)}


def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                 groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (seeded; NaNs dropped); with ``groups`` (the patients) whole
    patients are resampled, as several images of one patient are not independent."""
    v = np.asarray(values, float)
    ok = ~np.isnan(v)
    g = np.asarray(groups)[ok] if groups is not None else np.arange(ok.sum())
    v = v[ok]
    ids, member = np.unique(g, return_inverse=True)
    if len(ids) < 2:
        return (np.nan, np.nan)
    sums, counts = np.bincount(member, weights=v), np.bincount(member)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(ids), (n_boot, len(ids)))
    means = sums[draw].sum(1) / counts[draw].sum(1)
    return tuple(np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2]).tolist())
