"""How a shard batch becomes model input: augmentation (training only), the representation, then the
backbone's normalisation, all batched on the batch's device. Shared by training and by the analysis
(Grad-CAM reruns a trial's own preprocessing), so it lives below both."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cxrray.representations.augment import AugmentConfig, augment
from cxrray.representations.base import apply_representation


@dataclass
class InputPipeline:
    """How a batch (``image`` (B,H,W) float32, ``mask`` (B,H,W) uint8) becomes model input for one trial."""

    representation: str
    mean: float = 0.5
    std: float = 0.25
    augment: AugmentConfig | None = None
    channels_last: bool = False  # NHWC inputs: faster convolutions on CUDA tensor cores
    mask_dilation: int = 0  # grow the lung mask by this many pixels (after augmentation) before hiding

    def to_inputs(self, batch: dict[str, np.ndarray], device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        image = torch.tensor(batch["image"], device=device, dtype=torch.float32).unsqueeze(1)
        mask = torch.tensor(batch["mask"], device=device, dtype=torch.float32).unsqueeze(1)
        if generator is not None and self.augment is not None:
            image, mask = augment(image, mask, generator, self.augment)
        image = (apply_representation(self.representation, image, mask, self.mask_dilation) - self.mean) / self.std
        return image.contiguous(memory_format=torch.channels_last) if self.channels_last else image
