"""The small convolutional network that produces the maps of one image pair.

It is a temporary functional mapping: fitted to one pair, read once, discarded. Its input is always
resized to a fixed side (96 x 96, the original's, or smaller where the maps are refined after), so the maps
it produces do not depend on the working resolution and transfer to any output size.
"""

from __future__ import annotations

import torch
from torch import nn

from diffmorph.ops import resize

NET_INPUT_SIZE = 96  # The original's network input; three valid 5x5 convolutions leave 84 x 84.
SHRINK = 12  # What the three valid 5x5 convolutions take off each side's length.
MAP_SIZE = NET_INPUT_SIZE - SHRINK  # The maps' resolution: 84 x 84, whatever the network's input side.
MAP_CHANNELS = 16  # 8 per direction: mult (3), add (3), warp (2).
WARP_CHANNELS = [6, 7, 14, 15]  # The warp maps (dy, dx) of A->B, then of B->A, among the 16.


class MapNet(nn.Module):
    """Conv 5x5 -> 64, LeakyReLU(0.2), Conv 5x5 -> 64, LeakyReLU(0.2), Conv 5x5 -> 16, all unpadded.

    Weights are Glorot-uniform and biases zero, as in the original (Keras defaults).

    With ``members`` > 1 the module holds that many independent networks side by side, as grouped
    convolutions, so several pairs fit in one pass: member ``k`` sees input ``k`` only, and each
    member starts from the weights a single network gets from the same seed.

    Args:
        in_channels: 8 for the classic input (coordinate grid, 0.1 A, 0.1 B).
        members: independent networks held side by side.
        generator: source of the initial weights of a single network, so a seed fixes the whole fit.
        seed: with ``members``, every member's weights come from ``torch.Generator().manual_seed(seed)``.
    """

    def __init__(self, in_channels: int = 8, hidden: int = 64, *, members: int = 1,
                 generator: torch.Generator | None = None, seed: int | None = None):
        super().__init__()
        self.members = members
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels * members, hidden * members, 5, groups=members),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden * members, hidden * members, 5, groups=members),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden * members, MAP_CHANNELS * members, 5, groups=members),
        )
        generators = [generator] if seed is None else [torch.Generator().manual_seed(seed) for _ in range(members)]
        if len(generators) != members:
            raise ValueError(f"give a seed for {members} members, not one generator")
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                with torch.no_grad():  # each member drawn as a single network's layer: its own fans and stream
                    shape = (layer.out_channels // members, *layer.weight.shape[1:])
                    layer.weight.copy_(torch.cat([nn.init.xavier_uniform_(torch.empty(shape), generator=g)
                                                  for g in generators]))
                nn.init.zeros_(layer.bias)

    @staticmethod
    def prepare(net_input: torch.Tensor, side: int = NET_INPUT_SIZE) -> torch.Tensor:
        """Resize the network input to ``side`` x ``side`` (bilinear, half-pixel centres, no antialiasing).

        Split from :meth:`forward` because the input of a fit never changes: resize it once.

        Args:
            net_input: ``(B, C, H, W)``.
            side: more than :data:`SHRINK`; the network's maps are ``SHRINK`` pixels smaller.

        Returns:
            ``(B, C, side, side)``.
        """
        if side <= SHRINK:
            raise ValueError(f"the network's input side must be more than {SHRINK} pixels, got {side}")
        return resize(net_input, side, side)

    def forward(self, prepared: torch.Tensor) -> torch.Tensor:
        """Raw maps of both directions.

        Args:
            prepared: ``(B, C, S, S)`` from :meth:`prepare`; with members, ``B`` equals ``members``
                and item ``k`` goes to member ``k``.

        Returns:
            ``(B, 16, S - 12, S - 12)``: A->B mult, add, warp (0-7), then B->A (8-15); 84 x 84 from the
            original's 96 x 96.
        """
        if self.members == 1:
            return self.layers(prepared)
        if prepared.shape[0] != self.members:
            raise ValueError(f"{self.members} members need {self.members} inputs, got {prepared.shape[0]}")
        maps = self.layers(prepared.reshape(1, -1, *prepared.shape[2:]))  # (1, members * 16, 84, 84)
        return maps.view(self.members, MAP_CHANNELS, *maps.shape[2:])
