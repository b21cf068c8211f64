"""Mask post-processing and the mask-quality gate.

Keep the two largest connected components (the lungs), fill holes, and
optionally dilate and add a margin (COVID-CXNet crops with a margin around the
dilated lungs). The gate flags masks with fewer than two lung regions, an
implausible lung area, or test-time views that disagree (the U-Net's answer
changes with the view: mostly dense, opacified lungs it under-segments), so a
bad mask is reported instead of silently used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def clean_mask(prob: np.ndarray, threshold: float = 0.5, keep: int = 2, dilate: int = 0) -> np.ndarray:
    """Binary mask from probabilities: largest ``keep`` components, holes filled, optional dilation (px)."""
    mask = prob > threshold
    labels, n = ndimage.label(mask)
    if n > keep:
        sizes = ndimage.sum(mask, labels, index=range(1, n + 1))
        keep_ids = 1 + np.argsort(sizes)[::-1][:keep]
        mask = np.isin(labels, keep_ids)
    mask = ndimage.binary_fill_holes(mask)
    if dilate > 0:
        mask = ndimage.binary_dilation(mask, iterations=dilate)
    return mask.astype(np.uint8)


@dataclass(frozen=True)
class MaskQuality:
    regions: int
    area: float  # lung fraction of the image
    ok: bool
    reason: str


MIN_AGREEMENT = 0.93  # mean Dice of the test-time views with their mean, below which a mask is flagged


def mask_quality(mask: np.ndarray, min_area: float = 0.08, max_area: float = 0.60,
                 agreement: float | None = None, min_agreement: float = MIN_AGREEMENT) -> MaskQuality:
    """Gate: two lung regions, a plausible lung area (fraction of the image) and, for a predicted mask,
    test-time views that agree (``agreement``: mean Dice of each view's mask with the mean's)."""
    _, regions = ndimage.label(mask > 0)
    area = float((mask > 0).mean())
    problems = []
    if agreement is not None and agreement < min_agreement:
        problems.append(f"test-time views disagree (Dice {agreement:.3f} < {min_agreement})")
    if regions < 2:
        problems.append(f"{regions} lung region(s) found, expected 2")
    if not min_area <= area <= max_area:
        problems.append(f"lung area {area:.1%} outside [{min_area:.0%}, {max_area:.0%}]")
    return MaskQuality(regions, area, not problems, "; ".join(problems))
