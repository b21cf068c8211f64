"""Mask post-processing and the mask-quality gate.

Keep the two largest connected components (the lungs), fill holes, and
optionally dilate and add a margin (COVID-CXNet crops with a margin around the
dilated lungs). The gate flags masks with fewer than two lung regions, an
implausible lung area, or test-time views that disagree (the U-Net's answer
changes with the view: mostly dense, opacified lungs it under-segments), so a
bad mask is reported instead of silently used.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cxrray.data.maskgate import MIN_AGREEMENT, MaskQuality, mask_quality  # noqa: F401  (the one gate)


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
