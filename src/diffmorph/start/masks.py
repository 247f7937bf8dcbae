"""Regions a user marks on the images, which the fit honours: where the warp is held at none.

A mask is a picture of its image's size whose white part is the region. Two meanings:

- ``keep``: the region stays where it is and only crossfades (a logo, a caption, a face that must not move);
- ``subject``: the region is what corresponds; outside it the two images crossfade, unwarped.

Each direction's warp lives on the grid of the image it ends at (A->B on B's, B->A on A's), so A->B is held by
B's mask and B->A by A's; an image without a mask takes the other's. The held warp is none, and the fit keeps it
there (:attr:`~diffmorph.start.Start.free`), in the network's steps and in the refinement alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from diffmorph.errors import InputImageError
from diffmorph.io.images import ImageSource, fit_to_frame, load_image
from diffmorph.model import MAP_SIZE
from diffmorph.ops import resize
from diffmorph.start import Start

MASK_MODES = ("keep", "subject")


def load_masks(sources: Sequence[ImageSource | None], sizes: Sequence[tuple[int, int]], fit: str,
               labels: Sequence[str]) -> list[np.ndarray | None]:
    """Each image's mask as ``(H, W)`` float32 in ``[0, 1]`` (1: the region), fitted to the first image's frame
    as its image is; None where an image has none.

    Args:
        sources: one per image, or None.
        sizes: each image's own ``(width, height)`` as decoded; the first is the frame.
        fit: how images of another size are fitted to the frame (the config's ``fit``).
        labels: how errors name each image ("A", "B", "image 3").

    Raises:
        InputImageError: a mask that cannot be read, of another size than its image, or marking nothing.
    """
    width, height = sizes[0]
    masks: list[np.ndarray | None] = []
    for source, (own_width, own_height), label in zip(sources, sizes, labels, strict=True):
        if source is None:
            masks.append(None)
            continue
        picture = load_image(source, background="black", label=f"the mask of {label}")
        if picture.shape[:2] != (own_height, own_width):
            raise InputImageError(f"the mask of {label} is {picture.shape[1]} x {picture.shape[0]} pixels, its "
                                  f"image {own_width} x {own_height}; give a mask of its image's size")
        if float(picture.max()) < 0.5:
            raise InputImageError(f"the mask of {label} marks nothing; paint the region white on black")
        fitted, _ = fit_to_frame(picture, width, height, fit, "black")
        masks.append(fitted.mean(axis=2).astype(np.float32))
    return masks


def masked(start: Start, a: np.ndarray | None, b: np.ndarray | None, mode: str) -> Start:
    """``start`` with its warp held at none where the masks say (see the module's description).

    Args:
        a, b: the masks of the pair's two images, in the frame, or None.
        mode: one of :data:`MASK_MODES`.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")
    guide = describe_masks(mode, a, b)
    a, b = (a if a is not None else b), (b if b is not None else a)
    if a is None or b is None:
        return start
    regions = torch.from_numpy(np.stack((b, a)))[:, None]  # (2, 1, H, W): A->B on B's grid, then B->A on A's
    regions = resize(regions, MAP_SIZE, MAP_SIZE, antialias=True)[:, 0].clamp(0.0, 1.0)
    moving = 1.0 - regions if mode == "keep" else regions  # where the warp may move content
    free = moving if start.free is None else start.free * moving
    maps = start.maps
    if maps is not None:
        maps = maps.clone()
        maps[6:8] *= moving[0]
        maps[14:16] *= moving[1]
    return replace(start, maps=maps, free=free, guide=guide)


def describe_masks(mode: str, a: np.ndarray | None, b: np.ndarray | None) -> str:
    """One line on what the masks hold, for the start's record."""
    marked = [f"{name}'s {float(mask.mean()):.0%}" for name, mask in (("A", a), ("B", b)) if mask is not None]
    what = "kept still, crossfading" if mode == "keep" else "the subject; the rest crossfades unwarped"
    return f"masked ({' and '.join(marked)} of the frame): {what}"
