"""Representations and augmentation: batched torch/Kornia ops on the batch's device.

Built in: the five hide-and-seek representations, ``top_crop`` and ``seg_crop``,
and the ``enhance_stack`` (3 channels). ``REPRESENTATIONS`` maps a name to a
``RepresentationDef``: ``fn(image, mask) -> image`` (``image`` (B, C, H, W) float,
``mask`` (B, 1, H, W) with lung = 1) and its facts (channels, hides the lungs,
display order). A new representation is one function with ``@representation(...)``;
importing this package registers every built-in one. ``InputPipeline`` turns a
shard batch into model input (augmentation, representation, normalisation).
"""

from cxrray.representations import crops, enhance, hide_seek  # noqa: F401  (register their representations)
from cxrray.representations.base import (
    REPRESENTATIONS,
    RepresentationDef,
    apply_representation,
    display_order,
    hide_seek_representations,
    lung_box,
    lung_hiding,
    representation,
)
from cxrray.representations.pipeline import InputPipeline


def out_channels(name: str) -> int:
    """Channels a representation outputs for a 1-channel input (the model's ``in_chans``)."""
    return REPRESENTATIONS.get(name).channels


__all__ = ["REPRESENTATIONS", "InputPipeline", "RepresentationDef", "apply_representation", "display_order",
           "hide_seek_representations", "lung_box", "lung_hiding", "out_channels", "representation"]
