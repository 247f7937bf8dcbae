"""The move of the whole picture: a turn and a zoom about the centre, then a shift, found by phase correlation.

For each of a few turns and zooms, A is turned and scaled, and the shift is read off the peak of the phase
correlation of A's and B's :func:`structure`. The best peak is used only if it stands far above the rest of
the correlation surface and carrying A by it makes A's structure agree better with B's; unrelated images
give no such peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffmorph.ops import flow_from_warp_map, gaussian_blur, luma, resize, warp
from diffmorph.start.flows import in_pixels


@dataclass(frozen=True)
class MoveParams:
    """The search for the move of the whole picture (evidence in docs/method.md)."""

    size: int = 128  # both images are compared squashed to this square size, whatever the fit's size
    scales: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.25)  # zooms tried, B's content against A's
    angles: tuple[float, ...] = (-10.0, -5.0, 0.0, 5.0, 10.0)  # turns tried (degrees); the fit refines the rest
    confidence: float = 14.0  # least peak height, in standard deviations: moved copies peak at 21+, unrelated at 11-
    structure_band: float = 1 / 16  # shading coarser than this share of the frame is left out of the comparison


@dataclass(frozen=True)
class Alignment:
    """B's content is A's turned by ``angle`` and scaled by ``scale`` about the centre, then moved by ``shift``.

    Attributes:
        scale: zoom from A to B (above 1: B shows it larger).
        shift: ``(dy, dx)`` as fractions of the height and width (positive: down and right).
        confidence: height of the correlation peak in standard deviations of the surface.
        angle: turn from A to B in degrees, anticlockwise as seen on screen.
    """

    scale: float
    shift: tuple[float, float]
    confidence: float
    angle: float = 0.0

    def describe(self) -> str:
        """One line for a log, e.g. ``aligned: B is A moved 12 % right and 6 % down, 1.1x larger``."""
        parts = [f"moved {moves}"] if (moves := describe_shift(*self.shift)) else []
        if self.scale != 1.0:
            parts.append(f"{self.scale:g}x {'larger' if self.scale > 1 else 'smaller'}")
        if self.angle:
            parts.append(f"turned {abs(self.angle):g} degrees {'anticlockwise' if self.angle > 0 else 'clockwise'}")
        return f"aligned: B is A {', '.join(parts) or 'as it is'}"


def describe_shift(dy: float, dx: float) -> str:
    """A shift in fractions of the frame, in words rounded to whole percent ('' for none).

    >>> describe_shift(-0.06, 0.12)
    '12 % right and 6 % up'
    """
    return " and ".join(f"{abs(value) * 100:.0f} % {names[value > 0]}"
                        for value, names in ((dx, ("left", "right")), (dy, ("up", "down"))) if round(abs(value) * 100))


def structure(image: torch.Tensor, band: float = MoveParams.structure_band) -> torch.Tensor:
    """What the correlation compares: luma less its shading coarser than ``band`` of the frame, faded out
    towards the frame's edges.

    Args:
        image: ``(1, 3, S, S)`` in ``[-1, 1]``.

    Returns:
        ``(S, S)``.
    """
    size = image.shape[-1]
    grey = luma(image)
    detail = (grey - gaussian_blur(grey, band * size))[0, 0]
    window = torch.hann_window(size, periodic=False, dtype=image.dtype, device=image.device)
    return (detail - detail.mean()) * window[:, None] * window[None, :]


def agreement(image: torch.Tensor, target: torch.Tensor, band: float = MoveParams.structure_band) -> float:
    """Correlation of an image's :func:`structure` with another's, ``target`` (``(S, S)``)."""
    sx, sy = structure(image, band).flatten(), target.flatten()
    return float((sx * sy).sum() / (sx.norm() * sy.norm() + 1e-12))


def carried_agreement(a: torch.Tensor, b: torch.Tensor, flows: torch.Tensor,
                      band: float = MoveParams.structure_band) -> float:
    """The mean over both directions of :func:`agreement` after each image is carried by its flow.

    Args:
        a, b: ``(1, 3, S, S)``.
        flows: ``(2, 2, S, S)`` start flows (see :mod:`diffmorph.start.flows`).
    """
    carried = warp(torch.cat((a, b)), in_pixels(flows))
    return (agreement(carried[0:1], structure(b, band), band) + agreement(carried[1:2], structure(a, band), band)) / 2


def phase_correlate(a: torch.Tensor, b: torch.Tensor) -> tuple[tuple[int, int], float]:
    """The whole-pixel shift ``d`` with ``b(x) ≈ a(x - d)``, and the height of its peak.

    Args:
        a, b: ``(S, S)`` real images, such as :func:`structure` gives.

    Returns:
        ``((dy, dx), confidence)``: the shift in pixels, each in ``[-S/2, S/2)``, and the peak in
        standard deviations of the correlation surface.

    >>> x = torch.rand(32, 32)
    >>> phase_correlate(x, x.roll((3, -5), (0, 1)))[0]
    (3, -5)
    """
    size = a.shape[-1]
    cross = torch.fft.rfft2(b) * torch.fft.rfft2(a).conj()
    surface = torch.fft.irfft2(cross / (cross.abs() + 1e-9), s=a.shape)
    # Centred and smoothed a little: a shift between whole pixels spreads its peak over neighbours.
    surface = surface.roll((size // 2, size // 2), (0, 1))
    surface = gaussian_blur(surface[None, None], 1.0)[0, 0]
    peak = int(surface.argmax())
    spread = float(surface.std())
    confidence = float(surface.max() - surface.mean()) / spread if spread > 0 else 0.0  # flat images: no peak
    return (peak // size - size // 2, peak % size - size // 2), confidence


def find_alignment(a: torch.Tensor, b: torch.Tensor, params: MoveParams = MoveParams()) -> Alignment | None:
    """How B's content sits in A's frame, if the two clearly show the same thing moved, zoomed or turned.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size; they are compared squashed
            to ``params.size`` square, as the fit squashes them to its working size.

    Returns:
        An :class:`Alignment`, or None when no move stands out (unrelated images) or the best one
        is no move at all.
    """
    size, band = params.size, params.structure_band
    a, b = resize(a, size, size, antialias=True), resize(b, size, size, antialias=True)
    target = structure(b, band)
    best: Alignment | None = None
    for angle in params.angles:
        for scale in params.scales:
            (dy, dx), confidence = phase_correlate(structure(_turn_and_zoom(a, scale, angle), band), target)
            if best is None or confidence > best.confidence:
                best = Alignment(scale=scale, shift=(dy / size, dx / size), confidence=confidence, angle=angle)
    if best is None or best.confidence < params.confidence or (best.scale == 1.0 and best.angle == 0.0
                                                                and best.shift == (0.0, 0.0)):
        return None
    carried = warp(a, flow_from_warp_map(warp_prior(best, 1.0, size, size)[None, 6:8].to(a), 1.0))
    if agreement(carried, target, band) <= agreement(a, target, band):
        return None
    return best


def warp_prior(alignment: Alignment, warp_scale: float, height: int, width: int) -> torch.Tensor:
    """Raw maps that only warp, by ``alignment`` from A to B and by its inverse from B to A.

    Args:
        warp_scale: the config's ``warp_scale`` (map value 1 moves this fraction of the frame).
        height, width: the maps' resolution. Pixel centres sit at ``(i + 0.5) / n`` of the frame, so
            a bilinear resize of the maps to any size keeps the field affine.

    Returns:
        ``(16, height, width)``: zero colour maps; warp maps in channels 6-7 (A->B) and 14-15 (B->A).
    """
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5  # from the centre, fractions
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    (dy, dx), scale = alignment.shift, alignment.scale
    cos, sin = math.cos(math.radians(alignment.angle)), math.sin(math.radians(alignment.angle))
    maps = torch.zeros(16, height, width)
    # A->B: B(p) = A(M (p - d)) with M = R / s, R the turn matrix in (x, y): the backward flow is
    # p - M (p - d). B->A: A(p) = B(M^-1 p + d) with M^-1 = s R^T.
    ty, tx = y - dy, x - dx
    maps[6] = y - (sin * tx + cos * ty) / scale
    maps[7] = x - (cos * tx - sin * ty) / scale
    maps[14] = y - (scale * (-sin * x + cos * y) + dy)
    maps[15] = x - (scale * (cos * x + sin * y) + dx)
    return maps / warp_scale


def move_flows(alignment: Alignment | None, size: int) -> torch.Tensor:
    """Both directions' start flows of a move (none: zero), ``(2, 2, size, size)``."""
    if alignment is None:
        return torch.zeros(2, 2, size, size)
    return warp_prior(alignment, 1.0, size, size).view(2, 8, size, size)[:, 6:8]


def _turn_and_zoom(image: torch.Tensor, scale: float, angle: float) -> torch.Tensor:
    """``image`` turned by ``angle`` degrees anticlockwise and scaled by ``scale`` about its centre, in its
    own frame, the border repeated."""
    if scale == 1.0 and angle == 0.0:
        return image
    cos, sin = math.cos(math.radians(angle)) / scale, math.sin(math.radians(angle)) / scale
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
