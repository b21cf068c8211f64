"""Pure training and evaluation helpers: no Ray here, so they run and test anywhere.

A batch is the numpy dict a shard yields (``image`` (B,H,W) float32,
``mask`` (B,H,W) uint8, ``label`` codes, ``row`` ...). ``to_inputs`` turns it
into the model's input on ``device``: augmentation (training only), then the
representation, then the backbone's normalisation, all batched on the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxrray.data.tasks import Task
from cxrray.representations import apply_representation
from cxrray.representations.augment import AugmentConfig, augment


@dataclass
class InputPipeline:
    """How a batch becomes model input for one trial."""

    representation: str
    task: Task
    mean: float = 0.5
    std: float = 0.25
    augment: AugmentConfig | None = None
    channels_last: bool = False  # NHWC inputs: faster convolutions on CUDA tensor cores

    def targets(self, labels: np.ndarray) -> torch.Tensor:
        return torch.as_tensor([self.task.class_index(str(x)) for x in labels], dtype=torch.long)

    def to_inputs(self, batch: dict[str, np.ndarray], device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        image = torch.tensor(batch["image"], device=device, dtype=torch.float32).unsqueeze(1)
        mask = torch.tensor(batch["mask"], device=device, dtype=torch.float32).unsqueeze(1)
        if generator is not None and self.augment is not None:
            image, mask = augment(image, mask, generator, self.augment)
        image = (apply_representation(self.representation, image, mask) - self.mean) / self.std
        return image.contiguous(memory_format=torch.channels_last) if self.channels_last else image


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multilabel BCE where NaN targets (unknown findings) are left out of the loss and its mean."""
    known = ~torch.isnan(targets)
    if not known.any():
        return logits.sum() * 0.0  # keeps the graph; nothing known in this batch
    return nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])


def class_weights(labels: Iterable[str], task: Task) -> list[float]:
    """Inverse-frequency class weights normalised to mean 1 (CVR-Net style)."""
    counts = np.zeros(task.num_classes)
    for x in labels:
        counts[task.class_index(str(x))] += 1
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / task.num_classes, 0.0)
    return (w / w[w > 0].mean()).tolist()


def train_epoch(model: nn.Module, batches: Iterable[dict[str, np.ndarray]], pipe: InputPipeline,
                optimizer: torch.optim.Optimizer, loss_fn: nn.Module, device: torch.device,
                generator: torch.Generator, amp: bool = False, accum: int = 1) -> dict[str, float]:
    """One pass over ``batches``; returns mean loss and accuracy.

    ``amp``: bfloat16 autocast (no loss scaling needed); the worker turns it on for CUDA.
    ``accum``: step the optimiser every ``accum`` batches (gradients averaged), so the
    effective batch stays the same when the number of workers changes.
    """
    model.train()
    total, n, correct = 0.0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    pending = 0
    for batch in batches:
        x = pipe.to_inputs(batch, device, generator)
        y = pipe.targets(batch["label"]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        (loss / accum).backward()
        pending += 1
        if pending == accum:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            pending = 0
        total += float(loss.detach()) * len(y)
        n += len(y)
        correct += int((logits.argmax(1) == y).sum())
    if pending:  # a last, partial accumulation still updates the model
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"train_loss": total / max(n, 1), "train_acc": correct / max(n, 1)}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[dict[str, np.ndarray]], pipe: InputPipeline,
            device: torch.device, keep: tuple[str, ...] = ("row", "patient_id", "source", "label", "severity"),
            amp: bool = False) -> dict[str, np.ndarray]:
    """Softmax probabilities for every image, with the columns in ``keep`` carried along."""
    model.eval()
    probs, cols = [], {k: [] for k in keep}
    for batch in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(pipe.to_inputs(batch, device))
        probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
        for k in keep:
            cols[k].append(np.asarray(batch[k]))
    out = {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items()}
    out["prob"] = np.concatenate(probs) if probs else np.zeros((0, pipe.task.num_classes))
    out["target"] = pipe.targets(out["label"]).numpy() if len(out["label"]) else np.array([], int)
    return out


def evaluate(pred: dict[str, np.ndarray], loss_fn: nn.Module | None = None) -> dict[str, float]:
    """Accuracy, loss and AUROC (positive class for binary, macro one-vs-rest otherwise)."""
    from sklearn.metrics import roc_auc_score

    prob, y = pred["prob"], pred["target"]
    out = {"acc": float((prob.argmax(1) == y).mean()) if len(y) else float("nan")}
    if loss_fn is not None and len(y):
        logp = torch.log(torch.as_tensor(prob).clamp_min(1e-7))
        out["loss"] = float(nn.functional.nll_loss(logp, torch.as_tensor(y), weight=getattr(loss_fn, "weight", None)))
    present = np.unique(y)
    if len(present) < 2:
        out["auroc"] = float("nan")
    elif prob.shape[1] == 2:
        out["auroc"] = float(roc_auc_score(y, prob[:, 1]))
    else:
        out["auroc"] = float(np.mean([roc_auc_score(y == c, prob[:, c]) for c in present]))
    return out
