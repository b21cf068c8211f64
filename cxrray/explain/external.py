"""An external model (``models.external``) scored on every hide-and-seek representation of a test split, the
split streamed once (as ``scoring.score_models`` does for cxrray's own models): per representation the positive
class's probability of every image, aligned with its row, label, patient and source, and (``features``) the
model's penultimate features on whole images, hooked in the same pass. The audit's verdicts (``verdicts.audit``)
and its source probe (``audit_evidence``) read these arrays; no training, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrray.data.shards import LocalSplit
from cxrray.models.external import ExternalModel
from cxrray.representations import InputPipeline, apply_representation, hide_seek_representations, out_channels


@dataclass(frozen=True)
class ExternalScores:
    """The split's rows in shard order (manifest row, label, patient, source) and, per representation, the
    positive class's probability of each; ``features``: the penultimate features on ``original`` (None unless
    asked, or where the model's head cannot be hooked)."""

    rows: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    probs: dict[str, np.ndarray]
    sources: np.ndarray
    features: np.ndarray | None = None


def why_no_saliency(model: ExternalModel) -> str:
    """Why a model cannot be hooked (no Grad-CAM, no penultimate features), or "" when it can."""
    form = model.spec.form
    if model.module is None or form == "onnx":
        return "no saliency for an ONNX model: onnxruntime gives no gradients (audit the state_dict form for maps)"
    if form == "torchscript":
        return ("no saliency for a TorchScript model: a ScriptModule takes no hooks (audit the state_dict or factory "
                "form for maps)")
    return ""


def penultimate_head(model: ExternalModel) -> nn.Linear | None:
    """The model's last linear layer, whose input is its penultimate features; None where it cannot be hooked
    (TorchScript, ONNX) or there is none."""
    if why_no_saliency(model) or model.module is None:
        return None
    return next((m for m in reversed(list(model.module.modules())) if isinstance(m, nn.Linear)), None)


def score_external(model: ExternalModel, split_dir: str | Path, device: str = "cpu", batch_size: int = 64,
                   features: bool = False) -> ExternalScores:
    """Every one-channel hide-and-seek representation of the split's images through ``model``, each made once
    per batch on ``device``; with ``features`` the penultimate features of ``original`` are hooked on the way."""
    dev = torch.device(device)
    if model.module is not None:
        model.module.to(dev)
    reps = tuple(r for r in hide_seek_representations() if out_channels(r) == 1)
    probs: dict[str, list[np.ndarray]] = {r: [] for r in reps}
    columns: dict[str, list[np.ndarray]] = {"row": [], "label": [], "patient_id": [], "source": []}
    head = penultimate_head(model) if features else None
    seen: list[torch.Tensor] = []
    hook = (head.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().flatten(1).cpu()))
            if head is not None else None)
    try:
        with torch.no_grad():
            for batch in LocalSplit(str(split_dir), stored_pixels=True).iter_batches(batch_size=batch_size):
                for key, values in columns.items():
                    values.append(np.asarray(batch[key]) if key == "row" else np.asarray(batch[key]).astype(str))
                image, mask = InputPipeline.tensors(batch, dev)
                for rep in reps:
                    taken = len(seen)
                    probs[rep].append(model.positive(apply_representation(rep, image, mask)))
                    if rep != "original":
                        del seen[taken:]  # the features are those of whole images
    finally:
        if hook is not None:
            hook.remove()
    joined = {k: np.concatenate(v) if v else np.array([], int if k == "row" else str) for k, v in columns.items()}
    return ExternalScores(joined["row"], joined["label"], joined["patient_id"],
                          {r: np.concatenate(p) if p else np.array([], float) for r, p in probs.items()},
                          joined["source"], torch.cat(seen).numpy().astype(np.float64) if seen else None)
