"""Filling the pixels a carried frame does not trust from the trusted ones around them, only where they are."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffmorph.ops import fill_holes
from diffmorph.render.sampling import shrink


def fill_untrusted(layers: torch.Tensor, trust: torch.Tensor) -> torch.Tensor:
    """``layers`` (``(2, C, H, W)``) with the pixels that ``trust`` (``(2, 1, h, w)``, smaller) does not wholly
    trust blended, by it, into a filling from the trusted pixels around them; in place.

    The trust is no finer than the carried grids, so neither is what it leaves to be filled: the filling is
    made at the trust's size and upsampled, and only within the rows and columns that an untrusted pixel
    reaches, usually a small part of the frame: elsewhere the trust upsampled is 1 (costs in docs/method.md).
    Small pixels next to untrusted ones are left out of the filling, since they average some in.
    """
    (height, width), (low_height, low_width) = layers.shape[-2:], trust.shape[-2:]
    untrusted = trust[:, 0] < 1.0  # (2, h, w)
    for k in untrusted.flatten(1).any(dim=1).nonzero()[:, 0].tolist():  # often only one image has any
        known = -F.max_pool2d(-trust[k:k + 1], 3, stride=1, padding=1) >= 1.0  # trusted, and so are its 8 neighbours
        filling = fill_holes(shrink(layers[k:k + 1], low_height, low_width), known)  # (1, C, h, w)
        rows, columns = untrusted[k].any(dim=1).nonzero()[:, 0], untrusted[k].any(dim=0).nonzero()[:, 0]
        top, bottom = _reach(int(rows[0]), int(rows[-1]), low_height, height)
        left, right = _reach(int(columns[0]), int(columns[-1]), low_width, width)
        window = layers[k:k + 1, :, top:bottom, left:right]
        # The full-size upsamplings, within the window: the filling as resize() does it (half-pixel
        # centres), the trust as the grids (align_corners).
        weight = _upsampled(trust[k:k + 1], (top, bottom, left, right), (height, width), corners=True)
        filled = _upsampled(filling, (top, bottom, left, right), (height, width), corners=False)
        window.copy_(filled.lerp_(window, weight))
    return layers


def _reach(first: int, last: int, low: int, full: int) -> tuple[int, int]:
    """The full-size pixels ``[start, stop)`` on an axis whose bilinear upsampling (align_corners) from ``low``
    pixels draws on any of the low pixels ``first`` to ``last``."""
    scale = (full - 1) / max(1, low - 1)  # full-size pixels per low pixel
    return max(0, math.floor((first - 1) * scale)), min(full, math.ceil((last + 1) * scale) + 1)


def _upsampled(image: torch.Tensor, window: tuple[int, int, int, int], size: tuple[int, int], *,
               corners: bool) -> torch.Tensor:
    """The part ``(top, bottom, left, right)`` of ``image`` (``(1, C, h, w)``) upsampled bilinearly to ``size``,
    with ``align_corners`` = ``corners``, as ``F.interpolate`` makes it (up to rounding): ``(1, C, bottom - top,
    right - left)``."""
    (top, bottom, left, right), (height, width) = window, size
    device = image.device

    def unit(start: int, stop: int, extent: int) -> torch.Tensor:  # grid_sample's coordinates of those pixels
        pixels = torch.arange(start, stop, device=device, dtype=image.dtype)
        return pixels * (2.0 / (extent - 1)) - 1.0 if corners else (pixels + 0.5) * (2.0 / extent) - 1.0

    y, x = torch.meshgrid(unit(top, bottom, height), unit(left, right, width), indexing="ij")
    grid = torch.stack((x, y), dim=-1)[None]  # (1, h', w', 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=corners)
