"""Contrast enhancement of COVID-CXNet: the 3-channel stack [original, CLAHE, BEASF(gamma 1.5)],
and histogram matching to a reference image. Batched torch/Kornia on the batch's device.

BEASF (bi-histogram equalisation with adaptive sigmoid functions, Arriaga-Garcia
et al. 2014) is re-implemented from its description: the histogram is split at
the mean intensity; within each part the intensities are remapped by a sigmoid
whose centre is that part's median and whose slope is ``gamma``, normalised so
each part keeps its own range. CLAHE is Kornia's ``equalize_clahe``.
"""

from __future__ import annotations

import torch
from kornia.enhance import equalize_clahe

from cxrray.representations.base import representation


def _median_where(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-row median of the entries of ``x`` (B, N) where ``keep``; NaN-free fallback 0."""
    filled = torch.where(keep, x, torch.nan)
    med = torch.nanquantile(filled, 0.5, dim=1)
    return torch.nan_to_num(med, nan=0.0)


def beasf(image: torch.Tensor, gamma: float = 1.5) -> torch.Tensor:
    """BEASF enhancement of (B, 1, H, W) images in [0, 1]."""
    b = image.shape[0]
    flat = image.reshape(b, -1)
    m = flat.mean(1, keepdim=True)
    lower = flat <= m
    med_lo = _median_where(flat, lower)[:, None]
    med_hi = _median_where(flat, ~lower)[:, None]

    def part(x, lo, hi, centre):
        width = (hi - lo).clamp_min(1e-6)
        s = lambda v: torch.sigmoid(gamma * 10 * (v - centre) / width)  # noqa: E731  (slope per unit range)
        return lo + width * (s(x) - s(lo)) / (s(hi) - s(lo)).clamp_min(1e-6)

    out = torch.where(lower, part(flat, torch.zeros_like(m), m, med_lo), part(flat, m, torch.ones_like(m), med_hi))
    return out.reshape_as(image).clamp(0, 1)


def clahe(image: torch.Tensor, clip_limit: float = 2.0, grid: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (Kornia)."""
    return equalize_clahe(image.clamp(0, 1), clip_limit=clip_limit, grid_size=grid)


@representation(channels=3, order=20)
def enhance_stack(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """COVID-CXNet input: [original, CLAHE, BEASF(1.5)] as 3 channels (first channel of the input)."""
    x = image[:, :1]
    return torch.cat([x, clahe(x), beasf(x, 1.5)], dim=1)




def match_histogram(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Map each image's intensities so its histogram matches ``reference`` (H, W) (rank mapping).

    Used when sources differ (COVID-CXNet): pixel of rank r gets the reference's
    r-th quantile, so the output has exactly the reference's value distribution
    (resampled to the image's pixel count).
    """
    b = image.shape[0]
    flat = image.reshape(b, -1)
    n = flat.shape[1]
    ref = torch.sort(reference.reshape(-1).to(image))[0]
    pos = torch.linspace(0, ref.numel() - 1, n, device=image.device)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    quantiles = ref[lo] + (ref[hi] - ref[lo]) * (pos - lo)
    order = torch.argsort(flat, dim=1, stable=True)
    out = torch.empty_like(flat)
    out.scatter_(1, order, quantiles.expand(b, n))
    return out.reshape_as(image)
