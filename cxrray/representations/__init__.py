"""Representations and augmentation: batched torch/Kornia ops on the batch's device.

``REPRESENTATIONS`` maps a name to ``fn(image, mask) -> image`` where ``image``
is (B, C, H, W) float and ``mask`` is (B, 1, H, W) with lung = 1. Importing this
package registers every built-in representation.
"""

from cxrray.representations.base import REPRESENTATIONS, apply_representation, lung_box
from cxrray.representations import hide_seek  # noqa: F401  (registers the five of Sadre et al.)

__all__ = ["REPRESENTATIONS", "apply_representation", "lung_box"]
