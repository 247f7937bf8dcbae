"""The small convolutional network that produces the maps of one image pair.

It is a temporary functional mapping: fitted to one pair, read once, discarded. Its input is always
resized to 96 x 96, so the maps it produces do not depend on the working resolution and transfer to
any output size.
"""

from __future__ import annotations

import torch
from torch import nn

from diffmorph.ops import resize

NET_INPUT_SIZE = 96  # The original's map resolution; three valid 5x5 convolutions leave 84 x 84.
MAP_CHANNELS = 16  # 8 per direction: mult (3), add (3), warp (2).


class MapNet(nn.Module):
    """Conv 5x5 -> 64, LeakyReLU(0.2), Conv 5x5 -> 64, LeakyReLU(0.2), Conv 5x5 -> 16, all unpadded.

    Weights are Glorot-uniform and biases zero, as in the original (Keras defaults).

    Args:
        in_channels: 8 for the classic input (coordinate grid, 0.1 A, 0.1 B).
        generator: source of the initial weights, so a seed fixes the whole fit.
    """

    def __init__(self, in_channels: int = 8, hidden: int = 64, *, generator: torch.Generator | None = None):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 5),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, hidden, 5),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, MAP_CHANNELS, 5),
        )
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight, generator=generator)
                nn.init.zeros_(layer.bias)

    @staticmethod
    def prepare(net_input: torch.Tensor) -> torch.Tensor:
        """Resize the network input to 96 x 96 (bilinear, half-pixel centres, no antialiasing).

        Split from :meth:`forward` because the input of a fit never changes: resize it once.

        Args:
            net_input: ``(B, C, H, W)``.

        Returns:
            ``(B, C, 96, 96)``.
        """
        return resize(net_input, NET_INPUT_SIZE, NET_INPUT_SIZE)

    def forward(self, prepared: torch.Tensor) -> torch.Tensor:
        """Raw maps of both directions.

        Args:
            prepared: ``(B, C, 96, 96)`` from :meth:`prepare`.

        Returns:
            ``(B, 16, 84, 84)``: A->B mult, add, warp (0-7), then B->A (8-15).
        """
        return self.layers(prepared)
