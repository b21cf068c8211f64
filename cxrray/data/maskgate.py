"""The lung-mask plausibility gate, one for every mask: supplied with the data or predicted by the U-Net.

A mask that fails it would make a representation lie: an all-black mask leaves ``lungs_removed`` showing the
lungs and ``lungs_isolated`` blank; an inverted one hides the body instead. Failures are quarantined (ingest)
or flagged (the U-Net's masks) with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class MaskQuality:
    regions: int
    area: float  # lung fraction of the image
    ok: bool
    reason: str


MIN_AGREEMENT = 0.93  # mean Dice of the test-time views with their mean, below which a mask is flagged
MAX_BORDER = 0.25  # share of the image's edge pixels that may be lung (the 46 human masks of the fixtures: <= 0.12)


def mask_quality(mask: np.ndarray, min_area: float = 0.08, max_area: float = 0.60,
                 agreement: float | None = None, min_agreement: float = MIN_AGREEMENT,
                 max_border: float = MAX_BORDER) -> MaskQuality:
    """Gate: a non-empty mask of two lung regions, a plausible lung area (fraction of the image), inside the body
    (at most ``max_border`` of the image's edge is lung), and, for a predicted mask, test-time views that agree
    (``agreement``: mean Dice of each view's mask with the mean's)."""
    lung = np.asarray(mask) > 0
    _, regions = ndimage.label(lung)
    area = float(lung.mean())
    if not lung.any():
        return MaskQuality(0, 0.0, False, "empty mask (no lung pixel)")
    problems = []
    if agreement is not None and agreement < min_agreement:
        problems.append(f"test-time views disagree (Dice {agreement:.3f} < {min_agreement})")
    if regions < 2:
        problems.append(f"{regions} lung region(s) found, expected 2")
    if not min_area <= area <= max_area:
        problems.append(f"lung area {area:.1%} outside [{min_area:.0%}, {max_area:.0%}]")
    border = float(np.concatenate([lung[0], lung[-1], lung[1:-1, 0], lung[1:-1, -1]]).mean())
    if border > max_border:
        problems.append(f"{border:.0%} of the image edge is lung (at most {max_border:.0%}): not inside the body")
    return MaskQuality(regions, area, not problems, "; ".join(problems))


def gate_supplied(mask: np.ndarray, max_side: int = 128) -> MaskQuality:
    """The gate on a supplied mask, judged on a nearest-neighbour view of at most ``max_side`` px (cheap on a
    3,000 px mask, and the same answer: two lungs, their area and the edge survive the subsampling)."""
    step = max(1, -(-max(mask.shape) // max_side))
    return mask_quality(mask[::step, ::step])
