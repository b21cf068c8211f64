"""Representation registry and the shared lung-box helper."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cxrray.registry import Registry

Representation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REPRESENTATIONS: Registry[Representation] = Registry("representation")


def _span(flags: torch.Tensor) -> torch.Tensor:
    """Fill the gaps between the first and last True along the last dim."""
    f = flags.to(torch.uint8)
    fwd = torch.cummax(f, dim=-1).values
    bwd = torch.flip(torch.cummax(torch.flip(f, dims=[-1]), dim=-1).values, dims=[-1])
    return (fwd & bwd).bool()


def lung_box(mask: torch.Tensor) -> torch.Tensor:
    """Bounding box of all lung pixels per image, as a (B, 1, H, W) bool mask.

    The box is the smallest axis-aligned rectangle holding every lung pixel
    (both lungs together); an empty mask gives an empty box.
    """
    m = mask > 0.5
    rows = _span(m.any(dim=-1))  # (B, 1, H)
    cols = _span(m.any(dim=-2))  # (B, 1, W)
    return rows[..., :, None] & cols[..., None, :]


def apply_representation(name: str, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply the registered representation ``name`` to a batch (checks shapes first)."""
    if image.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or image.shape[-2:] != mask.shape[-2:] \
            or image.shape[0] != mask.shape[0]:
        raise ValueError(f"expected image (B,C,H,W) and mask (B,1,H,W), got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    return REPRESENTATIONS.get(name)(image, mask)
