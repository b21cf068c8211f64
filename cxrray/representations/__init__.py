"""Representations and augmentation: batched torch/Kornia ops on the batch's device.

Built in: the five hide-and-seek representations, ``top_crop`` and ``seg_crop``,
and the ``enhance_stack`` (3 channels; see ``out_channels``).

``REPRESENTATIONS`` maps a name to ``fn(image, mask) -> image`` where ``image``
is (B, C, H, W) float and ``mask`` is (B, 1, H, W) with lung = 1. Importing this
package registers every built-in representation.
"""

from cxrray.representations import crops, enhance, hide_seek  # noqa: F401  (register their representations)
from cxrray.representations.base import REPRESENTATIONS, apply_representation, lung_box


def out_channels(name: str) -> int:
    """Channels a representation outputs for a 1-channel input (the model's ``in_chans``)."""
    return getattr(REPRESENTATIONS.get(name), "out_channels", 1)


__all__ = ["REPRESENTATIONS", "apply_representation", "lung_box", "out_channels"]
