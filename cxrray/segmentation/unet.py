"""A compact U-Net (Ronneberger et al. 2015) for lung masks: plain PyTorch, any input size
divisible by 2**depth, one input channel, one output logit per pixel."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``base`` channels doubling per level."""

    def __init__(self, in_chans: int = 1, base: int = 16, depth: int = 4) -> None:
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_block(in_chans, chans[0])] +
                                  [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth)])
        self.merge = nn.ModuleList([_block(2 * chans[i], chans[i]) for i in range(depth)])
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"U-Net input sides must be divisible by {2**self.depth}, got {tuple(x.shape[-2:])}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(self.depth)):
            x = self.merge[i](torch.cat([self.up[i](x), skips.pop()], dim=1))
        return self.head(x)
