"""An external model (``models.external``) scored on every hide-and-seek representation of a test split, the
split streamed once (as ``scoring.score_models`` does for cxrray's own models): per representation the positive
class's probability of every image, aligned with its row, label and patient. The audit's verdicts
(``verdicts.audit``) read these arrays; no training, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrray.data.shards import LocalSplit
from cxrray.models.external import ExternalModel
from cxrray.representations import InputPipeline, apply_representation, hide_seek_representations, out_channels


@dataclass(frozen=True)
class ExternalScores:
    """The split's rows in shard order (manifest row, label, patient) and, per representation, the positive
    class's probability of each."""

    rows: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    probs: dict[str, np.ndarray]


def score_external(model: ExternalModel, split_dir: str | Path, device: str = "cpu", batch_size: int = 64
                   ) -> ExternalScores:
    """Every one-channel hide-and-seek representation of the split's images through ``model``, each made once
    per batch on ``device``."""
    dev = torch.device(device)
    if model.module is not None:
        model.module.to(dev)
    reps = tuple(r for r in hide_seek_representations() if out_channels(r) == 1)
    probs: dict[str, list[np.ndarray]] = {r: [] for r in reps}
    rows, labels, patients = [], [], []
    with torch.no_grad():
        for batch in LocalSplit(str(split_dir), stored_pixels=True).iter_batches(batch_size=batch_size):
            rows.append(np.asarray(batch["row"]))
            labels.append(np.asarray(batch["label"]).astype(str))
            patients.append(np.asarray(batch["patient_id"]).astype(str))
            image, mask = InputPipeline.tensors(batch, dev)
            for rep in reps:
                probs[rep].append(model.positive(apply_representation(rep, image, mask)))
    empty = np.array([], str)
    return ExternalScores(np.concatenate(rows) if rows else np.array([], int),
                          np.concatenate(labels) if labels else empty,
                          np.concatenate(patients) if patients else empty,
                          {r: np.concatenate(p) if p else np.array([], float) for r, p in probs.items()})
