"""Where a class-activation map's cells sit in the input, and placing a map there.

A CAM lives on the target layer's grid, not on the image. Stretching it onto the image (what
pytorch-grad-cam's resize does) is right only when the layer's cells tile the image evenly: the base
CNN's five unpadded 3x3 convolutions leave a 54x54 grid whose cell 0 is centred on input pixel 5, so a
stretched map equal to the lung mask scores 0.68 inside the lungs instead of 1.0. ``layer_geometry``
reads the layer's grid for the trial's input size and maps each axis ``pixel = offset + stride * cell``
(``grid_geometry``: power-of-two strides, the uncovered border split evenly); ``place`` gives every input
pixel the value of its nearest cell, so each cell's mass covers exactly its own tile and a map equal to
the (tile-aligned) lung mask scores 1.0 for any backbone.

A map with fewer than ``MIN_CELLS`` cells on a side cannot say *where* inside a chest the model looked
(ResNet-18's 2x2 map at 64 px spans lung shares of only [0.14, 0.28] around a lung area of 0.21):
``choose_layer`` takes the deepest candidate layer that reaches it, or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

MIN_CELLS = 7


@dataclass(frozen=True)
class Geometry:
    """Cell (i, j) of a (rows, cols) map is centred on input pixel
    (offset[0] + stride[0] i, offset[1] + stride[1] j)."""

    cells: tuple[int, int]
    offset: tuple[float, float]
    stride: tuple[float, float]

    @property
    def interpretable(self) -> bool:
        return min(self.cells) >= MIN_CELLS


def grid_geometry(cells: tuple[int, int], size: tuple[int, int]) -> Geometry:
    """The geometry of a (rows, cols) grid over an (H, W) input. CNN strides are powers of two, so the stride
    is the power of two nearest H / rows; what the grid does not cover (unpadded convolutions trim the borders)
    is split evenly, so ``offset = (H - stride * rows) / 2 + (stride - 1) / 2``. The base CNN's 54 x 54 grid
    over 64 px: stride 1, offset 5 (five unpadded 3 x 3 convolutions); ResNet-18's 7 x 7 over 224: 32, 15.5."""
    offset, stride = [], []
    for n, length in zip(cells, size, strict=True):
        s = float(2.0 ** np.round(np.log2(length / n)))
        stride.append(s)
        offset.append((length - s * n) / 2 + (s - 1) / 2)
    return Geometry((int(cells[0]), int(cells[1])), (offset[0], offset[1]), (stride[0], stride[1]))


def layer_geometry(model: torch.nn.Module, layer: str, input_shape: Sequence[int]) -> Geometry:
    """The geometry of ``layer``'s output grid for inputs of ``input_shape`` (C, H, W or B, C, H, W)."""
    shape = tuple(input_shape)[-3:]
    out: dict[str, torch.Tensor] = {}
    hook = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        hook.remove()
        model.train(was_training)
    rows, cols = out["a"].shape[-2:]
    return grid_geometry((int(rows), int(cols)), (shape[1], shape[2]))


def place(cams: np.ndarray, geometry: Geometry, size: tuple[int, int]) -> np.ndarray:
    """(B, rows, cols) layer-grid maps -> (B, H, W) maps on the input: each pixel takes its nearest cell."""
    cams = np.asarray(cams, np.float32)
    index = []
    for axis, n in ((0, size[0]), (1, size[1])):
        u = (np.arange(n) - geometry.offset[axis]) / geometry.stride[axis]
        index.append(np.clip(np.rint(u), 0, geometry.cells[axis] - 1).astype(int))
    return cams[:, index[0][:, None], index[1][None, :]]


def choose_layer(model: torch.nn.Module, layers: Sequence[str], input_shape: Sequence[int]
                 ) -> tuple[str | None, Geometry]:
    """The first (deepest) of ``layers`` whose map has at least ``MIN_CELLS`` cells a side, with its geometry;
    (None, the last geometry) when none does: the map is not interpretable at this resolution."""
    if not layers:
        raise ValueError("choose_layer needs at least one candidate layer")
    geometry = layer_geometry(model, layers[0], input_shape)
    for layer in layers:
        geometry = layer_geometry(model, layer, input_shape)
        if geometry.interpretable:
            return layer, geometry
    return None, geometry
