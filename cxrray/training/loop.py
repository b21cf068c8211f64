"""Pure training and evaluation helpers: no Ray here, so they run and test anywhere.

A batch is the numpy dict a shard yields (``image`` (B,H,W) float32 in [0, 1] or its stored integer pixels,
``mask`` (B,H,W) uint8, ``label`` codes, ``row`` ...). ``to_inputs`` turns it
into the model's input on ``device`` (``cxrray.representations.InputPipeline``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from cxrray.config import TrainRecipe
from cxrray.data.manifest import CARRIED_COLUMNS
from cxrray.data.tasks import Task
from cxrray.representations.pipeline import InputPipeline
from cxrray.training.heads import Head, masked_bce  # noqa: F401  (masked_bce re-exported)


def class_weights(labels: Iterable[str], task: Task) -> list[float]:
    """Inverse-frequency class weights normalised to mean 1 (CVR-Net style)."""
    counts = np.zeros(task.num_classes)
    for x in labels:
        counts[task.class_index(str(x))] += 1
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / task.num_classes, 0.0)
    return (w / w[w > 0].mean()).tolist()


def rebalance(batches: Iterable[dict[str, np.ndarray]], head: Head, generator: torch.Generator,
              batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Class-balanced batches from a stream: each image is repeated Poisson(rate of its class) times.

    Rates are 1 / (share of the class so far x number of classes), from the running
    counts, so every class contributes about equally in expectation without a pass
    over the data first (streaming, O(batch) memory; a Poisson bootstrap). Repeats
    are shuffled into the output batches with ``generator``.
    """
    counts = np.ones(head.task.num_classes)
    pending: dict[str, list[np.ndarray]] = {}
    size = 0
    for batch in batches:
        cls = head.class_targets(batch["label"])
        counts += np.bincount(cls, minlength=len(counts))
        rate = torch.as_tensor(counts.sum() / (counts * len(counts)), dtype=torch.float32)[torch.as_tensor(cls)]
        reps = torch.poisson(rate, generator=generator).long().numpy()
        idx = np.repeat(np.arange(len(cls)), reps)
        idx = idx[torch.randperm(len(idx), generator=generator).numpy()]
        for k, v in batch.items():
            pending.setdefault(k, []).append(np.asarray(v)[idx])
        size += len(idx)
        while size >= batch_size:
            merged = {k: np.concatenate(v) for k, v in pending.items()}
            yield {k: v[:batch_size] for k, v in merged.items()}
            pending = {k: [v[batch_size:]] for k, v in merged.items()}
            size -= batch_size
    if size:
        yield {k: np.concatenate(v) for k, v in pending.items()}


def make_optimizer(model: nn.Module, r: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimiser (Adam or SGD with momentum)."""
    if r.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)


def train_epoch(model: nn.Module, batches: Iterable[dict[str, np.ndarray]], pipe: InputPipeline,
                optimizer: torch.optim.Optimizer, head: Head, device: torch.device,
                generator: torch.Generator, amp: bool = False, accum: int = 1) -> dict[str, float]:
    """One pass over ``batches``; returns mean loss and accuracy.

    ``amp``: bfloat16 autocast (no loss scaling needed); the worker turns it on for CUDA.
    ``accum``: step the optimiser every ``accum`` batches (gradients averaged), so the
    effective batch stays the same when the number of workers changes.
    """
    model.train()
    total, n, correct, counted = 0.0, 0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    pending = 0
    for batch in batches:
        x = pipe.to_inputs(batch, device, generator)
        y = head.targets(batch).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = head.loss(logits.float(), y)
        (loss / accum).backward()
        pending += 1
        if pending == accum:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            pending = 0
        total += float(loss.detach()) * len(y)
        n += len(y)
        hit, cnt = head.hits(logits.detach().float(), y)
        correct, counted = correct + hit, counted + cnt
    if pending:  # a last, partial accumulation still updates the model
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"train_loss": total / max(n, 1), "train_acc": correct / max(counted, 1)}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[dict[str, np.ndarray]], pipe: InputPipeline, head: Head,
            device: torch.device, keep: tuple[str, ...] = CARRIED_COLUMNS,
            amp: bool = False) -> dict[str, np.ndarray]:
    """Per-class probabilities and targets for every image, with the columns in ``keep`` (those the batches
    have) carried along."""
    model.eval()
    probs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for batch in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(pipe.to_inputs(batch, device))
        probs.append(head.probs(logits.float()).cpu().numpy())
        targets.append(head.eval_targets(batch))
        for k in keep:
            if k in batch:
                cols[k].append(np.asarray(batch[k]))
    seen = any(cols.values())  # no batch at all: every column, empty
    out = {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items() if v or not seen}
    c = head.task.num_classes
    out["prob"] = np.concatenate(probs) if probs else np.zeros((0, c))
    out["target"] = np.concatenate(targets) if targets else np.zeros((0, c) if head.multilabel else 0, int)
    return out


def evaluate(pred: dict[str, np.ndarray], head: Head | None = None) -> dict[str, float]:
    """Accuracy, loss (when ``head`` is given) and AUROC.

    AUROC: the positive class for binary tasks, the macro one-vs-rest mean otherwise,
    the macro mean over findings with both values among the known ones for multilabel.
    """
    from sklearn.metrics import roc_auc_score

    prob, y = pred["prob"], pred["target"]
    if y.ndim == 2:  # multilabel: NaN = unknown
        known = ~np.isnan(y)
        out = {"acc": float(((prob > 0.5) == (y > 0.5))[known].mean()) if known.any() else float("nan")}
        aurocs = [roc_auc_score(y[known[:, j], j], prob[known[:, j], j]) for j in range(y.shape[1])
                  if len(np.unique(y[known[:, j], j])) == 2]
        out["auroc"] = float(np.mean(aurocs)) if aurocs else float("nan")
    else:
        out = {"acc": float((prob.argmax(1) == y).mean()) if len(y) else float("nan")}
        present = np.unique(y)
        if len(present) < 2:
            out["auroc"] = float("nan")
        elif prob.shape[1] == 2:
            out["auroc"] = float(roc_auc_score(y, prob[:, 1]))
        else:
            out["auroc"] = float(np.mean([roc_auc_score(y == c, prob[:, c]) for c in present]))
    if head is not None and len(y):
        out["loss"] = head.eval_loss(prob, y)
    return out
