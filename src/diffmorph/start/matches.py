"""Where A and B correspond under a start, and where they do not.

A start (the move, the bend, the subject carried) says where each image's content goes. Where that makes the two
pictures' structure agree, there is a correspondence for the fit to refine. Where it does not (a busy background
that changed, a hillside of another shape, ground a subject uncovers), nothing in the other image is that
region's match: a warp that moves it anyway invents motion, swirling or stretching the region to fetch colours
that happen to resemble the other image's, and mid-morph it melts. There the morph should crossfade, moved only
as the start moves it.

:func:`unmatched` measures, per pixel and per direction, how surely a region has no match: both images have
structure there, and after the start's flows carry one onto the other, that structure does not agree (the
correlation over a window around it is low, or the two flows do not lead there and back). A region without
structure in either image (a clear sky, a glow) is no evidence either way, and is left as free as before: moving
it shows nothing. :func:`holding` turns that into how free the fit is to change the warp (see
:class:`~diffmorph.start.Start`'s ``free``); :func:`gated` keeps a bent start's bend only where it is not
unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffmorph.ops import gaussian_blur, luma, resize, warp
from diffmorph.start.bend import box_mean, window_stats
from diffmorph.start.flows import in_pixels


@dataclass(frozen=True)
class MatchParams:
    """How sure a region's match is, and how firmly the warp is held where it has none (evidence in
    docs/method.md)."""

    size: int = 128  # the images are compared squashed to this square, as the move's search compares them
    band: float = 1 / 16  # shading coarser than this share of the frame is left out, as in the move's search
    window: int = 15  # side in pixels (at `size`) of the window the structure is correlated over: a region
    reach: int = 2  # pixels (at `size`) each way that the fit may still move a region the start left a little off
    low: float = 0.3  # correlation at or below which a region has no match: most windows of unrelated textures
    high: float = 0.6  # at or above which its match is sure: a moved copy of a scene reaches 0.9 and more
    flat: float = 0.03  # a window whose structure varies less than this (luma in [-1, 1]) has none; twice: has some
    grow: int = 3  # pixels (at `size`) a matched region grows by: its edge moves with it, not left behind as a ghost
    spread: float = 4.0  # Gaussian sigma (pixels at `size`) that smooths the result: no hard seams in the warp
    # A match found both ways leads there and back: the two flows undo each other. Where they do not by more than
    # `apart` of the frame (wholly at twice that), each found something different (bending matches pieces of two
    # unrelated textures, one way and the other way differently).
    apart: float = 0.02
    scene: float = 0.65  # least share of the frame the move of the whole picture matches to be the scene's move
    # Least share of the frame a start must match to be left whole, unheld: a bent photo's start leaves 17 % of it
    # unmatched (where the bend is a little off, and at the borders), unrelated grounds and landscapes 26-28 %.
    settled: float = 0.8
    hold: float = 0.05  # how free the fit is to change the warp where a region has no match (1: as free as anywhere)
    # surely_matched counts a pixel as structured from this much of `flat`'s ramp, and as surely matched from this
    # much of the low-high ramp: a part that corresponds, not one that half agrees by chance.
    structured: float = 0.5
    sure: float = 0.9


def structure(images: torch.Tensor, band: float) -> torch.Tensor:
    """``(N, 3, S, S)`` images to ``(N, 1, S, S)``: luma less its shading coarser than ``band`` of the frame."""
    grey = luma(images)
    return grey - gaussian_blur(grey, band * images.shape[-1])


def unmatched(a: torch.Tensor, b: torch.Tensor, flows: torch.Tensor, params: MatchParams = MatchParams()
              ) -> torch.Tensor:
    """How surely each pixel has no match under ``flows``: ``(2, S, S)`` in ``[0, 1]`` with ``S = params.size``,
    A->B on B's grid (A carried onto B, compared with B), then B->A on A's.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]``, squashed to ``params.size`` square.
        flows: ``(2, 2, s, s)`` start flows (see :mod:`diffmorph.start.flows`), any ``s``.

    A region counts as matched only as far as the two flows undo each other there (:func:`round_trip_gap`), and
    as unmatched only as far as both images have structure there.
    """
    sure, textured = _evidence(a, b, flows, params)
    missing = textured * (1 - sure)
    if params.grow > 0:  # matched regions grow (the unmatched ones shrink) by `grow` pixels
        missing = -F.max_pool2d(-missing, 2 * params.grow + 1, stride=1, padding=params.grow)
    return gaussian_blur(missing, params.spread)[:, 0].clamp(0, 1)


def surely_matched(a: torch.Tensor, b: torch.Tensor, flows: torch.Tensor, params: MatchParams = MatchParams()
                   ) -> float:
    """The share of the pixels with structure in both images whose match under ``flows`` is sure (see
    :func:`unmatched` for the arguments): a part that corresponds, however small, where the rest of the frame
    does not. A region without structure is no evidence, and does not count either way."""
    sure, textured = _evidence(a, b, flows, params)
    structured = textured > params.structured
    return float((sure > params.sure)[structured].float().mean()) if structured.any() else 0.0


def _evidence(a: torch.Tensor, b: torch.Tensor, flows: torch.Tensor, params: MatchParams
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unmatched`'s evidence, each ``(2, 1, S, S)`` in ``[0, 1]``: how sure each pixel's match is, and how
    surely both images have structure there."""
    size = params.size
    images = torch.cat((a, b))
    if images.shape[-2:] != (size, size):
        images = resize(images, size, size, antialias=True)
    if flows.shape[-1] != size:
        flows = resize(flows, size, size)
    carried = structure(warp(images, in_pixels(flows)), params.band)  # (2, 1, S, S): A onto B's grid, B onto A's
    fixed = structure(images.flip(0), params.band)  # what each carried image should match: B, then A

    # The start is a guess that the fit refines: a region counts as matched where a shift within the fit's reach
    # (`reach` pixels each way) makes it agree, the best of those shifts taken.
    window, reach = params.window, params.reach
    my, fixed_variance = _stats(fixed, window)
    padded = F.pad(carried, (reach,) * 4, mode="replicate")  # (2, 1, S + 2 reach, S + 2 reach)
    means, variances_all = _stats(padded, window)
    correlation = torch.full_like(my, -1.0)
    carried_variance = torch.zeros_like(my)
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            shifted = padded[..., dy:dy + size, dx:dx + size]
            mx, variance = means[..., dy:dy + size, dx:dx + size], variances_all[..., dy:dy + size, dx:dx + size]
            score = (box_mean(shifted * fixed, window) - mx * my) / ((variance * fixed_variance).sqrt() + 1e-4)
            carried_variance = torch.where(score > correlation, variance, carried_variance)
            correlation = torch.maximum(correlation, score)
    variances = carried_variance, fixed_variance
    sure = ((correlation - params.low) / (params.high - params.low)).clamp(0, 1)
    sure = sure * (2 - round_trip_gap(flows) / params.apart).clamp(0, 1)
    textured = (torch.minimum(*variances).sqrt() / params.flat - 1).clamp(0, 1)
    return sure, textured


def round_trip_gap(flows: torch.Tensor) -> torch.Tensor:
    """How far from its start a point lands after one flow and then the other, in fractions of the frame:
    ``(2, 1, S, S)``, A->B's on B's grid, then B->A's on A's. 0 where the flows undo each other."""
    back = warp(flows.flip(0), in_pixels(flows))  # the other direction's flow where each one leads
    return torch.hypot(*(flows + back).unbind(1)).unsqueeze(1)


def _stats(image: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~diffmorph.start.bend.window_stats`, the variance kept at 0 or above."""
    mean, variance = window_stats(image, window)
    return mean, variance.clamp_min(0)


def holding(unmatched: torch.Tensor, size: int, params: MatchParams = MatchParams()) -> torch.Tensor:
    """How free the fit is to change each direction's warp, ``(2, size, size)``, from :func:`unmatched`:
    ``params.hold`` where a region surely has no match, 1 where it has one or shows no structure."""
    return 1 - (1 - params.hold) * resize(unmatched[:, None], size, size, antialias=True)[:, 0]


def gated(bent: torch.Tensor, moved: torch.Tensor, unmatched: torch.Tensor) -> torch.Tensor:
    """A bent start's flows ``(2, 2, S, S)``, with the move's ``moved`` where the bend left a region unmatched
    (:func:`unmatched`, ``(2, s, s)``): a region that bending could not match is carried rigidly."""
    size = bent.shape[-1]
    weight = resize(unmatched[:, None], size, size, antialias=True)  # (2, 1, S, S)
    return torch.lerp(bent, moved, weight)
