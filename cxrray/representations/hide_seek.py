"""The five ROI hide-and-seek representations of Sadre et al. (2021).

Removed pixels are set to 0 (black). All ops are elementwise on the batch's
device, so they run wherever the batch lives (CPU here, GPU on a cluster).
"""

from __future__ import annotations

import torch

from cxrray.representations.base import lung_box, representation


@representation(hide_seek=True, order=0)
def original(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The whole image."""
    return image


def lung_interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood is all lung. cxrray's masks are *covering* (a resized or warped
    pixel that draws on any lung pixel is lung, so hiding the lungs hides all of them); isolating the
    lungs therefore keeps only the interior, so that no partly-outside pixel carries the source."""
    inside = (mask > 0.5).to(torch.float32)
    return -torch.nn.functional.max_pool2d(-inside, 3, stride=1, padding=1) > 0.5


@representation(hide_seek=True, order=1)
def lungs_isolated(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Only pixels inside the lung mask (its interior: see ``lung_interior``)."""
    return image * lung_interior(mask)


@representation(hides_lungs=True, hide_seek=True, order=2)
def lungs_removed(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Only pixels outside the lung mask."""
    return image * (mask <= 0.5)


@representation(hide_seek=True, order=3)
def lungs_framed(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Only pixels inside the bounding box of both lungs."""
    return image * lung_box(mask)


@representation(hides_lungs=True, hide_seek=True, order=4)
def lungs_boxed_out(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Only pixels outside the lung bounding box (hides the lung shape too)."""
    return image * ~lung_box(mask)
