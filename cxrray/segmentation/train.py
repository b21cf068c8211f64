"""Pure U-Net training and inference (no Ray): the Ray Train job and the tests call these.

Loss: BCE + soft Dice. Augmentation: the protocol's affine + intensity jitter,
applied identically to image and mask, drawn from an explicit generator, plus
what differs between hospitals (gamma, contrast, blur and noise), so the model
finds lungs by shape on sites it never saw. Inference averages test-time
augmentations; how much they disagree is the quality gate's best signal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxrray.representations.augment import AugmentConfig, augment
from cxrray.segmentation.unet import UNet


@dataclass(frozen=True)
class SegConfig:
    size: int = 128
    epochs: int = 70
    batch_size: int = 8
    lr: float = 2e-3
    base: int = 16
    depth: int = 4
    gamma: float = 0.5  # random gamma in [1/(1+g), 1+g]: lungs by shape, not only by darkness
    contrast: float = 0.3  # random contrast in [1-c, 1+c] around the image mean: sites differ in windowing
    blur: float = 1.0  # random Gaussian blur sigma in [0, blur] px (detector and resampling sharpness)
    noise: float = 0.03  # random additive noise sd in [0, noise] (dose)
    seed: int = 0
    augment: AugmentConfig = AugmentConfig(rotate_deg=10, translate=0.08, zoom=0.12, intensity=0.1)


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return nn.functional.binary_cross_entropy_with_logits(logits, target) + (1 - dice).mean()


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation: sources differ in exposure and gamma."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mean) / std


def site_jitter(x: torch.Tensor, cfg: SegConfig, gen: torch.Generator) -> torch.Tensor:
    """What differs between hospitals, drawn per image: gamma, contrast around the mean, blur, noise."""
    from kornia.filters import gaussian_blur2d

    n = len(x)

    def draw(half: float) -> torch.Tensor:
        return ((torch.rand(n, generator=gen) * 2 - 1) * half).to(x.device)[:, None, None, None]

    if cfg.gamma:
        x = x.clamp_min(0) ** torch.exp(draw(float(np.log1p(cfg.gamma))))
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * (1 + draw(cfg.contrast))
    if cfg.blur:
        sigma = (torch.rand(n, generator=gen) * cfg.blur).clamp_min(1e-3).to(x.device)
        x = gaussian_blur2d(x, (5, 5), torch.stack([sigma, sigma], 1))
    if cfg.noise:
        scale = (torch.rand(n, generator=gen) * cfg.noise).to(x.device)[:, None, None, None]
        x = x + torch.randn(x.shape, generator=gen).to(x.device) * scale
    return x


def train_unet(images: np.ndarray, masks: np.ndarray, cfg: SegConfig = SegConfig(),
               device: torch.device | str = "cpu",
               on_epoch: Callable[[int, float], None] | None = None,
               wrap: Callable[[nn.Module], nn.Module] | None = None) -> UNet:
    """Fit a U-Net on (N, S, S) float images in [0, 1] and {0, 1} masks at ``cfg.size``.

    ``wrap`` lets a distributed caller prepare the model (e.g. Ray Train's DDP wrapper).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = UNet(base=cfg.base, depth=cfg.depth).to(device)
    net = wrap(model) if wrap else model
    x_all = torch.tensor(images, dtype=torch.float32)[:, None]
    y_all = torch.tensor(masks, dtype=torch.float32)[:, None]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * int(np.ceil(len(x_all) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, y = augment(x_all[idx].to(device), y_all[idx].to(device), gen, cfg.augment, cover=False)
            x = site_jitter(x, cfg, gen)
            loss = dice_bce(net(_norm(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if on_epoch:
            on_epoch(epoch, total / len(x_all))
    return model.eval()


TTA_GAMMAS = (1.0, 0.7, 1.4)  # test-time views: as stored, brighter, darker; each also mirrored


@torch.no_grad()
def predict_with_agreement(model: UNet, images: np.ndarray, device: torch.device | str = "cpu",
                           batch_size: int = 16, tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mean lung probabilities (N, S, S), agreement (N,)): the agreement is the mean Dice between each
    test-time view's mask and the mean's mask (1.0 without ``tta``). A model unsure of an image's lungs,
    often a dense, opacified one it under-segments, changes its answer with the view."""
    model.eval()
    probs, agree = [], []
    for i in range(0, len(images), batch_size):
        x = torch.tensor(images[i:i + batch_size], dtype=torch.float32)[:, None].to(device)
        views = []
        for g in (TTA_GAMMAS if tta else (1.0,)):
            xg = x.clamp_min(0) ** g
            views.append(torch.sigmoid(model(_norm(xg))))
            if tta:
                views.append(torch.sigmoid(model(_norm(xg.flip(-1)))).flip(-1))
        stack = torch.stack(views)[:, :, 0]  # (V, B, S, S)
        mean = stack.mean(0)
        hard, each = mean > 0.5, stack > 0.5
        inter = (each & hard).sum(dim=(2, 3)).float()
        dice = (2 * inter + 1) / (each.sum(dim=(2, 3)) + hard.sum(dim=(1, 2)) + 1).float()
        probs.append(mean.cpu().numpy())
        agree.append(dice.mean(0).cpu().numpy())
    if not probs:
        return np.zeros((0, *images.shape[1:]), np.float32), np.zeros(0, np.float32)
    return np.concatenate(probs), np.concatenate(agree)
