"""Crop representations, batched and resized back to the input size.

- ``top_crop``: drop the top 8 % of rows (burn-in metadata), as the COVID-Net scripts do.
- ``seg_crop``: COVID-SDNet's segmentation-based crop: the smallest rectangle
  around both lungs, enlarged by 2.5 % of its size on each side, cropped.
Both use Kornia's ``crop_and_resize`` on the batch's device (bilinear).
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import crop_and_resize

from cxrray.representations.base import lung_box, representation

TOP_FRACTION = 0.08
SEG_MARGIN = 0.025


def _boxes(x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    """(B, 4, 2) corner boxes (tl, tr, br, bl) in pixel coordinates, as Kornia expects."""
    return torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                        torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], 1)


def crop_resize(image: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor,
                mode: str = "bilinear") -> torch.Tensor:
    """Crop each image to its inclusive pixel box and resize to the input size."""
    h, w = image.shape[-2:]
    f = lambda t: t.to(image.dtype)  # noqa: E731
    return crop_and_resize(image, _boxes(f(x0), f(y0), f(x1), f(y1)), (h, w), mode=mode, align_corners=True)


@representation(order=10, moves_pixels=True)
def top_crop(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image without its top 8 % of rows, resized back."""
    b, _, h, w = image.shape
    top = torch.full((b,), float(round(TOP_FRACTION * h)), device=image.device)
    return crop_resize(image, torch.zeros_like(top), top, torch.full_like(top, w - 1), torch.full_like(top, h - 1))


def seg_box(mask: torch.Tensor, margin: float = SEG_MARGIN
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0, y0, x1, y1) of the lung box grown by ``margin`` of its size per side, clipped;
    the whole image where a mask is empty."""
    box = lung_box(mask)[:, 0]
    h, w = box.shape[-2:]
    rows, cols = box.any(-1), box.any(-2)
    idx_h = torch.arange(h, device=mask.device).float()
    idx_w = torch.arange(w, device=mask.device).float()
    big = float(max(h, w))
    y0 = torch.where(rows, idx_h, big).min(-1).values
    y1 = torch.where(rows, idx_h, -1.0).max(-1).values
    x0 = torch.where(cols, idx_w, big).min(-1).values
    x1 = torch.where(cols, idx_w, -1.0).max(-1).values
    empty = y1 < 0
    dy, dx = margin * (y1 - y0 + 1), margin * (x1 - x0 + 1)
    y0, y1 = (y0 - dy).clamp(0, h - 1), (y1 + dy).clamp(0, h - 1)
    x0, x1 = (x0 - dx).clamp(0, w - 1), (x1 + dx).clamp(0, w - 1)
    zero, full_h, full_w = torch.zeros_like(y0), torch.full_like(y0, h - 1), torch.full_like(y0, w - 1)
    return (torch.where(empty, zero, x0), torch.where(empty, zero, y0),
            torch.where(empty, full_w, x1), torch.where(empty, full_h, y1))


@representation(order=11, moves_pixels=True)
def seg_crop(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Crop to the lungs' box plus 2.5 % per side (COVID-SDNet), resized back."""
    return crop_resize(image, *seg_box(mask))
