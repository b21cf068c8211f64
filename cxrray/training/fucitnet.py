"""FuCiTNet: learned class-inherent transformations, and COVID-SDNet's classifier on them. No Ray.

Rey-Area, Guirado, Tabik and Ruiz-Hidalgo, "FuCiTNet: Improving the generalization of deep
learning networks by the fusion of learned class-inherent transformations", Information Fusion
2020; used by Tabik et al., "COVIDGR dataset and COVID-SDNet methodology", IEEE JBHI 2020
(PROTOCOLS.md section 5).

One generator per class k (``ClassInherentGenerator``: a 9x9 convolution, 5 residual blocks of
64 feature maps, a 3x3 convolution back to the image) learns to push an image towards class k
while staying close to it. Stage 1 trains the generators together with a guide classifier
(ResNet-18): generator k's loss is pixel MSE + 0.006 x perceptual MSE (VGG-19 features through
relu5_4, as in SRGAN's loss that FuCiTNet builds on) + lambda x the guide's cross-entropy for
class k on the transformed images of class k; the guide learns to classify every transformed
image by its true class. Stage 2 freezes the generators and trains the study's classifier
(COVID-SDNet: ResNet-50 + FC 512) on K x K classes, (true class, generator) -- for COVID-19 the
four classes P+, P-, N+, N- -- over both transformed versions of every training image.

Inference (``FusedClassifier``): an image I is transformed by every generator and the
classifier's outputs are fused back to the task's classes. Fusion rule, as cxrray reads the
publication: score(k) = sum over generators g of P(class k, generator g | G_g(I)), normalised
over k; for two classes, P(positive) = (P(P+ | I+) + P(P- | I-)) / (that + P(N+ | I+) + P(N- | I-)).
Each transformed image is only scored on the classes its own generator can produce.

cxrray's inferences where the papers are silent (all in ``FuCiTConfig``): lambda 0.05; Adam
1e-4 (weight decay 1e-4) for the generators and 1e-3 for the guide, which trains jointly with
them; stage 1 runs as many epochs as the recipe and keeps the generators of the epoch with the
best guide validation AUROC; a long skip around the residual blocks (SRResNet). The perceptual
network is ImageNet VGG-19 when the trial asks for pretrained weights and they can be had;
offline it is a frozen random VGG-19, whose relu5_4 features barely vary: the perceptual term is
then about 1e-6 of the pixel term (measured on the phantom), i.e. the generators train on MSE +
lambda x CE. The trial's ``init`` records which network it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxrray.data.tasks import Task
from cxrray.models import build_backbone
from cxrray.training.heads import SoftmaxHead
from cxrray.training.loop import InputPipeline


@dataclass(frozen=True)
class FuCiTConfig:
    """Settings of the class-inherent transformation stage (see the module docstring for sources)."""

    guide: str = "resnet18"
    blocks: int = 5
    features: int = 64
    perceptual_weight: float = 0.006
    lam: float = 0.05
    gen_lr: float = 1e-4
    gen_weight_decay: float = 1e-4
    guide_lr: float = 1e-3
    stage1_epochs: int = 0  # 0: as many as the recipe's epochs
    perceptual_net: str = "vgg19"
    perceptual_layers: int = 36  # VGG-19 features[:36] ends at relu5_4


class ResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip (SRResNet)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features), nn.PReLU(),
                                  nn.Conv2d(features, features, 3, padding=1), nn.BatchNorm2d(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ClassInherentGenerator(nn.Module):
    """Image -> image of the same size: the transformation that makes an image look like its class."""

    def __init__(self, channels: int = 1, features: int = 64, blocks: int = 5) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, features, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(features) for _ in range(blocks)))
        self.tail = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.blocks(h) + h)


class Generators(nn.Module):
    """One generator per class; ``forward`` gives every transformed version, generator-major: (K*B, C, H, W)."""

    def __init__(self, num_classes: int, channels: int, cfg: FuCiTConfig) -> None:
        super().__init__()
        self.gens = nn.ModuleList(ClassInherentGenerator(channels, cfg.features, cfg.blocks)
                                  for _ in range(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([g(x) for g in self.gens])


def perceptual_network(channels: int, pretrained: bool, cfg: FuCiTConfig) -> tuple[nn.Module, str]:
    """Frozen VGG feature extractor for the perceptual loss; returns ``(net, init)``."""
    vgg, init = build_backbone(cfg.perceptual_net, 1, channels, pretrained)
    net = vgg.features[:cfg.perceptual_layers].eval()
    net.requires_grad_(False)
    return net, init


def pair_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Targets of the K x K classifier for generator-major stacked images: (true class k, generator g) -> k*K + g."""
    return torch.cat([y * num_classes + g for g in range(num_classes)])


def fuse(probs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K*B, K*K) probabilities of the generator-major stack -> (B, K) fused class probabilities."""
    k = num_classes
    per_gen = probs.view(k, -1, k, k)  # generator g, image, true class, generator class
    score = torch.stack([per_gen[g, :, :, g] for g in range(k)]).sum(0)  # only each generator's own classes
    return score / score.sum(1, keepdim=True).clamp_min(1e-12)


class FusedClassifier(nn.Module):
    """Generators + K x K classifier as one model whose output is log fused probabilities (a softmax of
    it gives them back), so the standard prediction and evaluation helpers apply unchanged."""

    def __init__(self, generators: nn.Module, classifier: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.generators, self.classifier, self.num_classes = generators, classifier, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.classifier(self.generators(x)).float(), 1)
        return torch.log(fuse(probs, self.num_classes).clamp_min(1e-12))


class GuideScore(nn.Module):
    """Stage-1 validation: the guide's class probabilities averaged over the transformed versions (log)."""

    def __init__(self, generators: nn.Module, guide: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.generators, self.guide, self.num_classes = generators, guide, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.guide(self.generators(x)).float(), 1)
        return torch.log(probs.view(self.num_classes, len(x), -1).mean(0).clamp_min(1e-12))


class PairClassifier(nn.Module):
    """Stage 2 training view: the generators (no gradients, ``train()`` leaves them in eval) feed the K x K
    classifier."""

    def __init__(self, generators: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.generators, self.classifier = generators, classifier

    def train(self, mode: bool = True) -> PairClassifier:
        super().train(mode)
        self.generators.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self.generators(x)
        return self.classifier(t)


class PairHead(SoftmaxHead):
    """Stage 2 head: K x K (true class, generator) targets for the generator-major stack; the task's
    class weights apply to every generator's copy of a class."""

    def __init__(self, task: Task, class_weights: list[float] | None = None) -> None:
        k = task.num_classes
        super().__init__(task, [w for w in class_weights for _ in range(k)] if class_weights else None)

    @property
    def num_outputs(self) -> int:
        return self.task.num_classes ** 2

    def targets(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        return pair_targets(torch.as_tensor(self.class_targets(batch["label"])), self.task.num_classes)


def stage1_epoch(generators: nn.Module, guide: nn.Module, perceptual: nn.Module,
                 batches: Iterable[dict[str, np.ndarray]], pipe: InputPipeline, gen_opt: torch.optim.Optimizer,
                 guide_opt: torch.optim.Optimizer, head: SoftmaxHead, cfg: FuCiTConfig, device: torch.device,
                 generator: torch.Generator) -> dict[str, float]:
    """One pass training the generators (MSE + perceptual + lambda x guide CE on their own class) and the
    guide (CE of every transformed image against its true class). Returns mean losses and guide accuracy."""
    k = head.task.num_classes
    generators.train()
    guide.train()
    w = head.weight_tensor()
    w = None if w is None else w.to(device)
    sums, n, correct = {"gen_mse": 0.0, "gen_perceptual": 0.0, "gen_class": 0.0, "guide_loss": 0.0}, 0, 0
    for batch in batches:
        x = pipe.to_inputs(batch, device, generator)
        y = head.targets(batch).to(device)
        b = len(y)
        out = generators(x)  # (K*B, C, H, W), generator-major
        with torch.no_grad():
            ref = perceptual(x)
        feats = perceptual(out)
        gen_idx = torch.arange(k, device=device).repeat_interleave(b)
        own = y.repeat(k) == gen_idx  # generator g's images of class g
        mse = F.mse_loss(out, x.repeat(k, 1, 1, 1), reduction="none").flatten(1).mean(1)
        perc = F.mse_loss(feats, ref.repeat(k, 1, 1, 1), reduction="none").flatten(1).mean(1)
        logits = guide(out)
        ce = F.cross_entropy(logits[own], gen_idx[own], weight=w) if own.any() else logits.sum() * 0.0
        # each generator's mean over its B images; summed over generators (independent objectives)
        gen_loss = (mse.sum() + cfg.perceptual_weight * perc.sum()) / b + cfg.lam * ce * k
        gen_opt.zero_grad(set_to_none=True)
        gen_loss.backward()
        gen_opt.step()
        guide_logits = guide(out.detach())
        guide_loss = F.cross_entropy(guide_logits, y.repeat(k), weight=w)
        guide_opt.zero_grad(set_to_none=True)
        guide_loss.backward()
        guide_opt.step()
        sums["gen_mse"] += float(mse.detach().mean()) * b
        sums["gen_perceptual"] += float(perc.detach().mean()) * b
        sums["gen_class"] += float(ce.detach()) * b
        sums["guide_loss"] += float(guide_loss.detach()) * b
        correct += int((guide_logits.argmax(1) == y.repeat(k)).sum())
        n += b
    return {key: v / max(n, 1) for key, v in sums.items()} | {"guide_acc": correct / max(k * n, 1)}
