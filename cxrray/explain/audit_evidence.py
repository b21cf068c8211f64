"""The audit's evidence beyond AUROCs (issue 40): where the audited model looks, and what the acquisition gives
away.

- ``audit_saliency``: Grad-CAM of the positive output on whole test images (stratified by label), each map's
  mass inside the lungs next to the lungs' share of the image (what an even map would give), and the model-
  parameter randomisation check (``sanity``): maps that do not change when the top of the network is
  re-initialised do not explain the model, and no claim is read from them. Only for a module cxrray can hook
  (state_dict, factory, torchxrayvision forms); TorchScript and ONNX get the reason instead.
- ``audit_sources`` (``--sources``): the source-only ceiling (each test patient scored by its acquisition's
  positive rate among the other patients, cross-fitted over 5 patient folds: the AUROC the hospital alone
  reaches) and a source probe on the model's penultimate features (a logistic regression, out of fold over
  patients; balanced accuracy against chance with the patient permutation test): a model whose features name
  the hospital can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from cxrray.data.shards import read_split_local
from cxrray.explain.cam_geometry import MIN_CELLS, choose_layer
from cxrray.explain.external import ExternalScores, why_no_saliency
from cxrray.explain.probe import patient_test
from cxrray.explain.saliency import bootstrap_ci, gradcam, saliency_mass
from cxrray.explain.sanity import RHO_MAX, randomisation_test
from cxrray.models.external import ExternalModel
from cxrray.models.plugins import last_conv
from cxrray.representations import InputPipeline
from cxrray.stats.interval import auroc_interval

FOLDS = 5  # patient folds of the cross-fitted ceiling and the out-of-fold probe


@dataclass(frozen=True)
class AuditSaliency:
    """Per image: its lungs' share of the map (``lung_share``) and of the image (``lung_area``), and the rank
    correlation with the randomised model's map; the summary sentence, and what the figure draws."""

    rows: pl.DataFrame
    layer: str
    says: str
    figure: dict[str, Any]


def _stratified(split_dir: str | Path, positive: str, limit: int) -> dict[str, np.ndarray]:
    """Up to ``limit`` test images, half positive and half not (shard order within each half)."""
    batch = read_split_local(Path(split_dir), max(limit * 20, limit))
    is_pos = np.asarray(batch["label"]).astype(str) == positive
    per = max(limit // 2, 1)
    keep = np.sort(np.concatenate([np.flatnonzero(is_pos)[:per], np.flatnonzero(~is_pos)[:per]]))
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def audit_saliency(model: ExternalModel, split_dir: str | Path, positive: str, limit: int = 32, seed: int = 0,
                   device: str = "cpu") -> AuditSaliency:
    """Grad-CAM of the positive output on up to ``limit`` whole test images (half of each class)."""
    empty = pl.DataFrame()
    if why := why_no_saliency(model):
        return AuditSaliency(empty, "", why, {})
    module: nn.Module = model.module  # type: ignore[assignment]
    s = model.spec
    layer = s.gradcam_layer or last_conv(module)
    if layer not in dict(module.named_modules()):
        return AuditSaliency(empty, layer, f"no saliency: gradcam_layer {layer!r} is not a module of the model", {})
    batch = _stratified(split_dir, positive, limit)
    image, mask = InputPipeline.tensors(batch, torch.device(device))
    x = model.prepare(image).requires_grad_(False)
    module.to(device).eval()
    lungs = nn.functional.interpolate(mask.float(), size=x.shape[-2:], mode="nearest")[:, 0].cpu().numpy() > 0
    chosen, geometry = choose_layer(module, (layer,), x.shape)
    if chosen is None:
        return AuditSaliency(empty, layer, f"no saliency: {layer} has {geometry.cells[0]} x {geometry.cells[1]} "
                             f"cells, fewer than {MIN_CELLS} a side (not interpretable at this input size)", {})
    target = np.full(len(x), s.positive_index)
    maps = gradcam(module, layer, x, target, method=s.cam, geometry=geometry)
    empty_maps = float(np.mean(maps.reshape(len(x), -1).max(1) <= 0))
    if empty_maps > 0.5:
        hint = "; for a head that flattens the feature map set cam hirescam" if s.cam == "gradcam" else ""
        return AuditSaliency(empty, layer, f"no saliency: {s.cam} gave empty maps for {empty_maps:.0%} of the images "
                             f"at {layer} (the positive output's gradient-weighted features are negative everywhere, "
                             f"as in an untrained model{hint})", {})
    rho = randomisation_test(maps, lambda m: gradcam(m, layer, x, target, method=s.cam, geometry=geometry), module,
                             layer, seed)
    label = np.asarray(batch["label"]).astype(str)
    patients = np.asarray(batch["patient_id"]).astype(str)
    rows = pl.DataFrame({"row": batch["row"], "patient_id": patients, "label": label,
                         "lung_share": saliency_mass(maps, lungs), "lung_area": lungs.reshape(len(x), -1).mean(1),
                         "randomisation_rho": rho, "cam_layer": layer})
    share = rows["lung_share"].to_numpy()
    lo, hi = bootstrap_ci(share, seed=seed, groups=patients)
    mean_rho = float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")
    method = "Grad-CAM" if s.cam == "gradcam" else "HiResCAM"
    area = float(rows["lung_area"].mean())  # type: ignore[arg-type]
    says = (f"{method} of the positive output at {layer}: {np.nanmean(share):.0%} [{lo:.0%}, {hi:.0%}] of each "
            f"map's mass lies in the lungs, which cover {area:.0%} of the image (an even map's "
            f"share; {len(x)} images of {len(set(patients))} patients, interval by patient bootstrap)")
    says += (f"; the maps change when the model's top is re-initialised (rank correlation {mean_rho:.2f}, below "
             f"{RHO_MAX})" if mean_rho < RHO_MAX else
             f"; the maps barely change when the model's top is re-initialised (rank correlation {mean_rho:.2f}, "
             f"at or above {RHO_MAX}): they do not explain this model, and no claim is read from them")
    with torch.no_grad():
        prob = model.positive(image)
    figure = {"representation": "original", "backbone": Path(s.path).name, "all_classes": (positive, "other"),
              "truth": np.where(label == positive, positive, "other"), "seen": image[:, 0].cpu().numpy(),
              "pred": maps, "mask": lungs, "classes": np.where(prob >= 0.5, positive, "other"),
              "prob": np.where(prob >= 0.5, prob, 1 - prob)}
    return AuditSaliency(rows, layer, says, figure)


def _folds(patients: np.ndarray, seed: int) -> np.ndarray:
    """A fold per image (its patient's: a patient's images stay together)."""
    ids, member = np.unique(patients, return_inverse=True)
    return (np.random.default_rng(seed).permutation(len(ids)) % FOLDS)[member]


def source_ceiling(y: np.ndarray, sources: np.ndarray, patients: np.ndarray, level: float = 0.95,
                   seed: int = 0) -> dict[str, Any]:
    """AUROC [interval] of scoring each image by its source's positive rate among the other folds' patients
    (one pseudo-image at their overall rate, so a source seen once is not certain)."""
    fold = _folds(patients, seed)
    score = np.empty(len(y))
    for f in range(FOLDS):
        train, test = fold != f, fold == f
        prior = y[train].mean() if train.any() else 0.5
        for source in np.unique(sources[test]):
            seen = train & (sources == source)
            score[test & (sources == source)] = (y[seen].sum() + prior) / (seen.sum() + 1)
    ci = auroc_interval(y, score, patients, level)
    return {"evidence": "source-only ceiling", "value": ci.auc, "lo": ci.lo, "hi": ci.hi, "chance": 0.5,
            "p": ci.p_chance, "says": f"the acquisition alone reaches AUROC {ci.auc:.3f} [{ci.lo:.3f}, {ci.hi:.3f}]"
            + (": the hospital predicts the label, so a lung-hiding AUROC up to this can be the hospital's"
               if ci.lo > 0.5 else ": the hospital does not predict the label here")}


def source_probe(features: np.ndarray, sources: np.ndarray, patients: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Balanced accuracy [patient bootstrap] of predicting the source from the model's features, out of fold
    over patients, with the one-sided patient permutation p."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fold = _folds(patients, seed)
    pred = np.empty(len(sources), dtype=object)
    for f in range(FOLDS):
        train, test = fold != f, fold == f
        if not test.any():
            continue
        if len(set(sources[train])) < 2:
            pred[test] = sources[train][0]
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=seed))
        pred[test] = clf.fit(features[train], sources[train]).predict(features[test])
    p, lo, hi = patient_test(sources, pred.astype(str), patients, seed)
    from sklearn.metrics import balanced_accuracy_score

    value, chance = float(balanced_accuracy_score(sources, pred.astype(str))), 1 / len(set(sources))
    return {"evidence": "source probe on the model's features", "value": value, "lo": lo, "hi": hi,
            "chance": chance, "p": p, "says": f"the model's penultimate features name the source with balanced "
            f"accuracy {value:.2f} [{lo:.2f}, {hi:.2f}] (chance {chance:.2f}, permutation p {p:.3g} over patients)"
            + (": the hospital is readable from what the model computes" if p < 0.05 and lo > chance
               else ": no evidence the features carry the hospital")}


def audit_sources(model: ExternalModel, scores: ExternalScores, positive: str, level: float = 0.95, seed: int = 0
                  ) -> pl.DataFrame:
    """The ceiling and the feature probe for a test split with two or more sources (empty otherwise), from the
    audit's one scoring pass (``score_external(..., features=True)``)."""
    sources, patients = scores.sources, scores.patients
    if len(set(sources)) < 2:
        return pl.DataFrame()
    y = scores.labels == positive
    rows = [source_ceiling(y, sources, patients, level, seed)] if y.any() and not y.all() else []
    if scores.features is not None:
        rows.append(source_probe(scores.features, sources, patients, seed))
    else:
        rows.append({"evidence": "source probe on the model's features", "value": float("nan"), "lo": float("nan"),
                     "hi": float("nan"), "chance": 1 / len(set(sources)), "p": float("nan"),
                     "says": "the model's features cannot be reached (" + (why_no_saliency(model).split(":")[0]
                                                                            or "no linear head") + ")"})
    return pl.DataFrame(rows)
