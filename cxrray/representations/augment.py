"""Augmentation of Sadre et al.: rotation +-10 deg, translation +-10 %, zoom +-15 %,
intensity shift +-10 %, no horizontal flip unless asked.

Parameters are drawn from an explicit ``torch.Generator`` (no global RNG), then
applied with Kornia's warp so that image and mask get the *same* transform
(bilinear for the image; for the mask bilinear then "any lung > 0", a covering mask:
every output pixel that draws on a lung pixel stays lung, so no lung content can
leak into a lung-hiding representation through the interpolation rim; nearest for
segmentation targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.geometry.transform import get_affine_matrix2d, warp_affine


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0
    translate: float = 0.10
    zoom: float = 0.15
    intensity: float = 0.10
    hflip: bool = False


def _uniform(n: int, half: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=g) * 2 - 1) * half


def augment(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
            cfg: AugmentConfig = AugmentConfig(), cover: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly transform a batch; returns (image, mask) on the input device.

    ``cover``: the mask marks every pixel that draws on lung (for hiding the lungs); False warps it
    nearest-neighbour (segmentation targets, where a grown mask would bias the U-Net)."""
    b, _, h, w = image.shape
    dev = image.device
    angle = _uniform(b, cfg.rotate_deg, generator)
    shift = torch.stack([_uniform(b, cfg.translate * w, generator), _uniform(b, cfg.translate * h, generator)], 1)
    zoom = 1 + _uniform(b, cfg.zoom, generator)
    center = torch.tensor([[(w - 1) / 2, (h - 1) / 2]]).repeat(b, 1)
    mat = get_affine_matrix2d(shift, center, torch.stack([zoom, zoom], 1), angle)[:, :2].to(dev, image.dtype)
    if cfg.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        image = torch.where(flip.to(dev)[:, None, None, None], image.flip(-1), image)
        mask = torch.where(flip.to(dev)[:, None, None, None], mask.flip(-1), mask)
    image = warp_affine(image, mat, (h, w), mode="bilinear", padding_mode="zeros", align_corners=True)
    mask = warp_affine(mask.to(image.dtype), mat, (h, w), mode="bilinear" if cover else "nearest",
                       padding_mode="zeros", align_corners=True)
    if cover:
        mask = (mask > 1e-6).to(image.dtype)
    shift_i = _uniform(b, cfg.intensity, generator).to(dev, image.dtype)[:, None, None, None]
    return (image + shift_i).clamp(0, 1), mask
