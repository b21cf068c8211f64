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
    """How a batch (``image`` (B,H,W) float32 in [0, 1] or stored integer pixels, ``mask`` (B,H,W) uint8)
    becomes model input for one trial."""

    representation: str
    mean: float = 0.5
    std: float = 0.25
    augment: AugmentConfig | None = None
    channels_last: bool = False  # NHWC inputs: faster convolutions on CUDA tensor cores
    mask_dilation: int = 0  # grow the lung mask by this many pixels (after augmentation) before hiding

    def to_inputs(self, batch: dict[str, np.ndarray], device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        image, mask = self.tensors(batch, device)
        if generator is not None and self.augment is not None:
            image, mask = augment(image, mask, generator, self.augment)
        image = (apply_representation(self.representation, image, mask, self.mask_dilation) - self.mean) / self.std
        return image.contiguous(memory_format=torch.channels_last) if self.channels_last else image

    @staticmethod
    def tensors(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, mask) as (B, 1, H, W) float32 on ``device``, the image in [0, 1]: stored integer pixels
        (``LocalSplit(stored_pixels=True)``) are scaled there, with the same float32 division as ``decode``."""
        image, mask = (_on(batch[k], device).unsqueeze(1) for k in ("image", "mask"))
        raw = batch["image"]
        if isinstance(raw, torch.Tensor):  # page-locked stored pixels (``LocalSplit(pin_memory=True)``)
            full = None if raw.dtype.is_floating_point else torch.iinfo(raw.dtype).max
        else:
            stored = np.asarray(raw).dtype
            full = np.iinfo(stored).max if stored.kind in "ui" else None
        if full is not None:  # full scale is the type's maximum, as ``shards.encode`` wrote it
            image = image / torch.tensor(float(full), dtype=torch.float32, device=device)
        return image, mask


def _on(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float32 copy of ``x`` on ``device``. To an accelerator ``x`` crosses as it is and is converted there:
    a uint8 mask moves a quarter of the bytes of its float32 copy, and the host does no conversion. A torch
    tensor (page-locked by ``LocalSplit(pin_memory=True)``) crosses asynchronously."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True).float() if device.type != "cpu" else x.float()
    if device.type == "cpu":
        return torch.tensor(x, dtype=torch.float32)
    return torch.from_numpy(np.require(x, requirements=["C", "W"])).to(device).float()
