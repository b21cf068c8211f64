"""Representation registry (each entry carries its domain facts) and the shared lung-box helper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cxrray.registry import Registry

RepresentationFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RepresentationDef:
    """A registered representation: ``fn(image (B,C,H,W), mask (B,1,H,W)) -> image`` and what the rest of the
    pipeline must know about it (the timm ``PretrainedCfg`` idea): the channels it outputs for a 1-channel
    input (the model's ``in_chans``), whether it hides the lungs (a shortcut verdict reads these), whether it is
    one of Sadre et al.'s hide-and-seek five, and its place in every table and figure."""

    name: str
    fn: RepresentationFn
    channels: int = 1
    hides_lungs: bool = False
    hide_seek: bool = False
    order: int = 100
    description: str = ""
    moves_pixels: bool = False  # a crop or warp: the lungs the model sees are the mask moved the same way

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fn(image, mask)

    def seen_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The lung mask (B, 1, H, W) as the model sees it after this representation: moved like the image by a
        crop, unchanged otherwise (hiding pixels does not move the lungs)."""
        return (self.fn(mask.float(), mask) > 0.5).to(mask.dtype) if self.moves_pixels else mask


REPRESENTATIONS: Registry[RepresentationDef] = Registry("representation")


def representation(*, channels: int = 1, hides_lungs: bool = False, hide_seek: bool = False,
                   order: int = 100, moves_pixels: bool = False) -> Callable[[RepresentationFn], RepresentationFn]:
    """Decorator registering a representation function under its own name, with its facts."""

    def deco(fn: RepresentationFn) -> RepresentationFn:
        REPRESENTATIONS.register(fn.__name__)(RepresentationDef(
            fn.__name__, fn, channels, hides_lungs, hide_seek, order, (fn.__doc__ or "").strip().splitlines()[0],
            moves_pixels))
        return fn

    return deco


def display_order(names: list[str]) -> list[str]:
    """Registered representations by their declared order, then any other label alphabetically."""
    known = sorted((n for n in names if n in REPRESENTATIONS), key=lambda n: (REPRESENTATIONS.get(n).order, n))
    return known + sorted(n for n in names if n not in REPRESENTATIONS)


def hide_seek_representations() -> tuple[str, ...]:
    """The five representations of Sadre et al., in protocol order."""
    return tuple(display_order([n for n in REPRESENTATIONS.names() if REPRESENTATIONS.get(n).hide_seek]))


def lung_hiding() -> tuple[str, ...]:
    """Representations that hide the lungs (a model that still works on them reads something else)."""
    return tuple(display_order([n for n in REPRESENTATIONS.names() if REPRESENTATIONS.get(n).hides_lungs]))


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


def dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    """The lung mask (B, 1, H, W) grown by ``px`` pixels in every direction (a square structuring element):
    segmentation masks tend to miss the lung edge, so a lung-hiding representation is rerun with grown masks
    to see whether its verdict rests on an edge the mask left visible (mask-dilation sensitivity)."""
    if px <= 0:
        return mask
    return torch.nn.functional.max_pool2d((mask > 0.5).to(torch.float32), 2 * px + 1, stride=1,
                                          padding=px).to(mask.dtype)


def apply_representation(name: str, image: torch.Tensor, mask: torch.Tensor, dilation: int = 0) -> torch.Tensor:
    """Apply the registered representation ``name`` to a batch (checks shapes first), its lung mask grown by
    ``dilation`` pixels first (``dilate``)."""
    if image.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or image.shape[-2:] != mask.shape[-2:] \
            or image.shape[0] != mask.shape[0]:
        raise ValueError(f"expected image (B,C,H,W) and mask (B,1,H,W), got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    return REPRESENTATIONS.get(name).fn(image, dilate(mask, dilation))
