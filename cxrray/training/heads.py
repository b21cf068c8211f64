"""Output heads: how a task's labels become targets, a loss and per-class probabilities.

Three kinds, chosen from the task (``make_head``):

- ``SoftmaxHead``: one output per class, cross-entropy (class weights, label
  smoothing). Binary tasks use a 2-way softmax, which equals one sigmoid on the
  logit difference (Fricks et al.'s "1 sigmoid").
- ``MultilabelHead``: one sigmoid per finding (ChestX-ray14), BCE with
  unknown findings (NaN) masked out of the loss, unweighted as in Fricks et al.
- ``MarginHead``: capsule lengths (COVID-CAPS) with the margin loss.
- ``HierarchicalHead``: COVID-CXNet's two stages in one network: output 0 is
  pneumonia vs normal (all images), output 1 is COVID-19 vs other pneumonia
  (trained on pneumonia images only). P(NOR) = 1 - p0, P(NCP) = p0 (1 - p1),
  P(CVP) = p0 p1, so evaluation sees ordinary 3-class probabilities.

Pure torch/numpy; no Ray.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxrray.data.tasks import Task


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE over the known (non-NaN) targets only; ``weight`` (per output) scales each column."""
    known = ~torch.isnan(targets)
    if not known.any():
        return logits.sum() * 0.0  # keeps the graph; nothing known in this batch
    w = None if weight is None else weight.expand_as(targets)[known]
    return nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known], weight=w)


class Head:
    """Base: targets from a batch, a loss on logits, probabilities per task class."""

    multilabel = False

    def __init__(self, task: Task) -> None:
        self.task = task

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs  # the task's fact: two binary stages for a hierarchical one

    def class_targets(self, labels: np.ndarray) -> np.ndarray:
        """Class index per image (what evaluation compares the probabilities with)."""
        return np.asarray([self.task.class_index(str(x)) for x in labels], dtype=np.int64)

    def eval_targets(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.class_targets(batch["label"])

    def targets(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(self.class_targets(batch["label"]))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(correct, counted) for the running training accuracy."""
        return int((logits.argmax(1) == targets).sum()), len(targets)

    def eval_loss(self, prob: np.ndarray, target: np.ndarray) -> float:
        """Loss on stored probabilities (validation loss for plateau, early stop and selection)."""
        logp = torch.log(torch.as_tensor(prob).clamp_min(1e-7))
        return float(nn.functional.nll_loss(logp, torch.as_tensor(target), weight=self.weight_tensor()))

    def weight_tensor(self) -> torch.Tensor | None:
        return None


class SoftmaxHead(Head):
    """Cross-entropy over the task's classes."""

    def __init__(self, task: Task, class_weights: list[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(task)
        self.class_weights, self.label_smoothing = class_weights, label_smoothing

    def weight_tensor(self) -> torch.Tensor | None:
        return torch.tensor(self.class_weights, dtype=torch.float32) if self.class_weights else None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = self.weight_tensor()
        return nn.functional.cross_entropy(logits, targets, weight=None if w is None else w.to(logits.device),
                                           label_smoothing=self.label_smoothing)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, 1)


class MultilabelHead(Head):
    """One sigmoid per finding; NaN (unknown) targets are masked out."""

    multilabel = True

    def eval_targets(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.task.multilabel_targets(batch).astype(np.float32)

    def targets(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(self.eval_targets(batch))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return masked_bce(logits, targets)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        known = ~torch.isnan(targets)
        return int(((logits > 0) == (targets > 0.5))[known].sum()), int(known.sum())

    def eval_loss(self, prob: np.ndarray, target: np.ndarray) -> float:
        p, t = torch.as_tensor(prob).clamp(1e-7, 1 - 1e-7), torch.as_tensor(target)
        known = ~torch.isnan(t)
        return float(nn.functional.binary_cross_entropy(p[known], t[known])) if known.any() else float("nan")


class HierarchicalHead(Head):
    """Two binary stages: pneumonia vs normal, then COVID-19 vs other pneumonia (pneumonia images only)."""

    def __init__(self, task: Task, stage_weights: tuple[float, float] | None = None) -> None:
        if task.classes != ("NOR", "NCP", "CVP"):
            raise ValueError(f"a hierarchical head needs classes (NOR, NCP, CVP), task {task.name} has {task.classes}")
        super().__init__(task)
        self.stage_weights = stage_weights

    def targets(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        c = torch.as_tensor(self.class_targets(batch["label"]))
        pneu = (c > 0).float()
        covid = torch.where(c > 0, (c == 2).float(), torch.full_like(pneu, float("nan")))
        return torch.stack([pneu, covid], 1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = None if self.stage_weights is None else torch.tensor(self.stage_weights, device=logits.device)
        return masked_bce(logits, targets, w)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        return torch.stack([1 - p[:, 0], p[:, 0] * (1 - p[:, 1]), p[:, 0] * p[:, 1]], 1)

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        cls = torch.where(targets[:, 0] > 0.5, 1 + (targets[:, 1] > 0.5).long(), 0)
        return int((self.probs(logits).argmax(1) == cls).sum()), len(cls)


class MarginHead(SoftmaxHead):
    """Capsule-network outputs (class capsule lengths in [0, 1)) with the margin loss of Sabour et al.
    (m+ 0.9, m- 0.1, lambda 0.5), each image weighted by its class weight as in COVID-CAPS. Probabilities
    are the lengths normalised to sum to 1 (the ranking AUROC needs)."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = nn.functional.one_hot(targets, logits.shape[1]).to(logits.dtype)
        per = (t * torch.relu(0.9 - logits) ** 2 + 0.5 * (1 - t) * torch.relu(logits - 0.1) ** 2).sum(1)
        w = self.weight_tensor()
        if w is None:
            return per.mean()
        w = w.to(logits.device)[targets]
        return (per * w).sum() / w.sum()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / logits.sum(1, keepdim=True).clamp_min(1e-8)


def make_head(task: Task, class_weights: list[float] | None = None, label_smoothing: float = 0.0,
              output: str = "logits") -> Head:
    """The head a task needs (class weights and smoothing apply to softmax heads); ``output`` is the
    backbone's kind of output ("capsule_lengths" -> margin loss)."""
    if output == "capsule_lengths":
        if task.multilabel or task.hierarchical:
            raise ValueError(f"capsule outputs (margin loss) need a single-label task, not {task.name}")
        return MarginHead(task, class_weights)
    if output != "logits":
        raise ValueError(f"unknown model output {output!r}; valid: logits, capsule_lengths")
    if task.multilabel:
        return MultilabelHead(task)
    if task.hierarchical:
        return HierarchicalHead(task)
    return SoftmaxHead(task, class_weights, label_smoothing)
