"""The start's flow convention and its one boundary with the maps.

Every start flow is ``(2, 2, S, S)`` on a square grid: the A->B flow (on B's grid), then the B->A flow (on
A's), channel 0 = dy and channel 1 = dx as in :mod:`diffmorph.ops`, backward (``b(p) ≈ a(p - flow(p))``), but
in **fractions of the frame** rather than pixels, so one flow serves every size the images are compared at.
:func:`in_pixels` turns one into the ``ops`` convention, :func:`warp_maps` into the fit's raw warp maps.
"""

from __future__ import annotations

import torch

from diffmorph.ops import resize


def in_pixels(flows: torch.Tensor) -> torch.Tensor:
    """``(N, 2, S, S)`` flows in fractions of the frame, in pixels of their own ``S`` x ``S`` grid.

    >>> in_pixels(torch.full((1, 2, 4, 4), 0.25))[0, :, 0, 0].tolist()
    [1.0, 1.0]
    """
    return flows * flows.shape[-1]


def warp_maps(flows: torch.Tensor, warp_scale: float, size: int) -> torch.Tensor:
    """Raw maps of side ``size`` that only warp, by ``(2, 2, S, S)`` start flows.

    A raw warp map of value 1 moves ``warp_scale`` of the frame (:func:`diffmorph.ops.flow_from_warp_map`).

    Returns:
        ``(16, size, size)``: zero colour maps; the A->B flow in channels 6-7, the B->A flow in 14-15.

    >>> warp_maps(torch.full((2, 2, 8, 8), 0.05), 0.05, 4)[[0, 6, 15], 0, 0].tolist()
    [0.0, 1.0, 1.0]
    """
    flows = resize(flows, size, size, antialias=True) / warp_scale  # (2, 2, size, size)
    maps = torch.zeros(16, size, size)
    maps[6:8], maps[14:16] = flows[0], flows[1]
    return maps
