"""Bending the move region by region, for a subject that changes shape (two faces, two poses).

A smooth field per direction (control points, interpolated bicubically) is fitted, coarse to fine, to raise
the correlation of the two greyscales over small windows, which a change of colour or contrast does not
affect (see :func:`_local_agreement`). Penalties keep it smooth (:func:`_stretching`), close to a zoom, turn
and shift of each region on the coarse levels (:func:`_curving`), free to crease at depth edges on the fine
ones (:func:`_kinking`), and from folding content over itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffmorph.adam import Adam
from diffmorph.ops import luma, resize, warp
from diffmorph.start.move import Alignment, move_flows


@dataclass(frozen=True)
class BendParams:
    """The bent start's levels and penalties (evidence in docs/method.md)."""

    # (resolution, control points per side, steps) per level, coarsest first.
    levels: tuple[tuple[int, int, int], ...] = ((32, 4, 40), (32, 8, 40), (64, 16, 40), (128, 24, 40), (256, 48, 40))
    size: int = 256  # both images are compared squashed to this square size, the finest level's
    rate: float = 0.01  # Adam's step on the control points, in fractions of the frame (at most a pixel a level)
    smooth: float = 0.05  # weight of the stretching penalty (any change of the field) against the disagreement
    curve: float = 0.003  # weight of the curving penalty on coarse levels: zoom a face onto another, not caricature
    curved_points: int = 16  # levels of at most this many control points per side pay for curving squared
    kink: float = 0.001  # weight of the finer levels' curving penalty, robust so a depth edge may crease
    kink_scale: float = 5.0  # curvature (frames per frame squared) above which the robust penalty grows linearly
    fine_curving: str = "robust"  # the finer levels' penalty: "robust" (_kinking) or "squared" (_curving)
    least_area: float = 0.5  # where the warp shrinks area below this factor it is penalised: it would fold
    fold: float = 10.0  # weight of that penalty
    window: int = 13  # side in pixels of the windows the greyscales are correlated over, at every level


def local_warp(a: torch.Tensor, b: torch.Tensor, alignment: Alignment | None, *, levels: int | None = None,
               params: BendParams = BendParams()) -> torch.Tensor:
    """Start flows that carry A's content onto B's and B's onto A's, region by region.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]``, compared squashed to ``params.size`` square.
        alignment: the move of the whole picture to start from, or None.
        levels: how many of ``params.levels`` to go through, coarsest first; all by default.

    Returns:
        ``(2, 2, S, S)`` with ``S = params.size`` (see :mod:`diffmorph.start.flows`): the A->B flow, then B->A.
    """
    return nth(bent_fields(a, b, alignment, params), levels or len(params.levels))


def bent_fields(a: torch.Tensor, b: torch.Tensor, alignment: Alignment | None, params: BendParams = BendParams()
                ) -> Iterator[torch.Tensor]:
    """:func:`local_warp`'s flows after each of ``params.levels`` in turn, each level going on from the last."""
    size = params.size
    a, b = resize(a, size, size, antialias=True), resize(b, size, size, antialias=True)
    moving, fixed = luma(torch.cat((a, b))), luma(torch.cat((b, a)))  # (2, 1, S, S): A onto B, B onto A
    start = move_flows(alignment, size)
    control = None
    for resolution, points, steps in params.levels:
        level_moving = resize(moving, resolution, resolution, antialias=True)
        level_fixed = resize(fixed, resolution, resolution, antialias=True)
        fixed_stats = window_stats(level_fixed, params.window)  # the same at every step of the level
        weights = _contrast(level_fixed, params.window)
        level_start = resize(start, resolution, resolution, antialias=True) * resolution  # pixels
        control = torch.zeros(2, 2, points, points) if control is None else F.interpolate(
            control, size=(points, points), mode="bilinear", align_corners=True)
        control = control.detach().requires_grad_(True)  # (2, 2, P, P): fractions of the frame
        optimizer = Adam([control])
        rate = min(params.rate, 1 / resolution)
        with torch.enable_grad():  # left before each yield: the caller's grad mode is its own
            for _ in range(steps):
                flow = F.interpolate(control, size=(resolution, resolution), mode="bicubic",
                                     align_corners=True) * resolution + level_start  # (2, 2, R, R) pixels
                agreement = _local_agreement(warp(level_moving, flow), level_fixed, weights, params.window,
                                             fixed_stats).mean()
                bending = params.smooth * _stretching(control)
                if points <= params.curved_points:
                    bending = bending + params.curve * _curving(control)
                elif params.fine_curving == "squared":
                    bending = bending + params.kink * _curving(control)
                else:
                    bending = bending + params.kink * _kinking(control, params.kink_scale)
                folding = (params.least_area - _area_change(flow)).clamp_min(0).square().mean()
                # Summed over the two directions, which are independent: each gets its own gradient.
                loss = 2 * (1 - agreement + bending + params.fold * folding)
                control.grad = None
                loss.backward()
                optimizer.step(rate)
        yield F.interpolate(control.detach(), size=(size, size), mode="bicubic", align_corners=True) + start


def nth(fields: Iterator[torch.Tensor], count: int) -> torch.Tensor:
    """The ``count``-th of ``fields`` (from 1), leaving the iterator just after it."""
    return next(itertools.islice(fields, count - 1, None))


def _stretching(control: torch.Tensor) -> torch.Tensor:
    """How much a field of control points ``(N, 2, P, P)`` (fractions of the frame) changes across the frame:
    the mean squared first derivative, the same for one field sampled by any number of points.

    >>> float(_stretching(torch.ones(1, 2, 4, 4)))
    0.0
    """
    points = control.shape[-1]
    return sum(control.diff(dim=d).square().mean() for d in (2, 3)) * points * points


def _curving(control: torch.Tensor) -> torch.Tensor:
    """How far a field of control points ``(N, 2, P, P)`` is from one affine map: the mean squared second
    derivative (a thin plate's bending energy), so a zoom, turn or shift costs nothing; per point count as
    :func:`_stretching`.

    >>> ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    >>> affine = torch.stack((0.1 * ys - 0.2 * xs, 0.3 * xs))[None]
    >>> round(float(_curving(affine)), 6), round(float(_curving(affine ** 2)), 2)
    (0.0, 5.43)
    """
    points = control.shape[-1]
    along = sum(control.diff(n=2, dim=d).square().mean() for d in (2, 3))
    across = control.diff(dim=2).diff(dim=3).square().mean()
    return (along + 2 * across) * points**4


def _kinking(control: torch.Tensor, scale: float = BendParams.kink_scale) -> torch.Tensor:
    """:func:`_curving` made robust: the mean over the points of ``sqrt(c^2 + k^2) - k``, where ``c`` is the
    size of the field's second derivative at a point and ``k`` is ``scale``, so strong curving costs in
    proportion to its size rather than its square. A crease along one line (a depth edge) costs 2.5 times as
    much as the same change of slope spread evenly over the field; :func:`_curving` makes it 10 times as dear.

    >>> x = torch.arange(12.0)
    >>> crease = (x - 5).abs().expand(1, 2, 12, 12) / 10
    >>> spread = (x - 5).square().expand(1, 2, 12, 12) / 100
    >>> round(float(_curving(crease) / _curving(spread)), 1), round(float(_kinking(crease) / _kinking(spread)), 1)
    (10.0, 2.5)
    """
    points = control.shape[-1]
    inner = control[..., 1:-1, 1:-1]
    along_y = control[..., 2:, 1:-1] - 2 * inner + control[..., :-2, 1:-1]
    along_x = control[..., 1:-1, 2:] - 2 * inner + control[..., 1:-1, :-2]
    across = control.diff(dim=2).diff(dim=3)[..., : points - 2, : points - 2]
    size = (along_y.square() + along_x.square() + 2 * across.square()).sum(dim=1).sqrt() * points * points
    return ((size.square() + scale**2).sqrt() - scale).mean()


def _local_agreement(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, window: int = BendParams.window,
                     y_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """How well ``x`` matches ``y``, both ``(N, 1, H, W)``: their correlation over a ``window`` square around
    each pixel, averaged with ``weights`` (:func:`_contrast` of ``y``): ``(N,)``.

    Correlation is normalised, so a window of faint texture (a floor, a sky's gradient) would count as much as
    one holding a strong edge, though where it matches is far less certain: counting windows by contrast keeps
    such windows from pulling the warp off true. Windows of no contrast count for nothing (correlation 0).
    ``y_stats`` is :func:`window_stats` of ``y`` where the caller has it.
    """
    my, vy = window_stats(y, window) if y_stats is None else y_stats
    mx = box_mean(x, window)
    vx, cxy = box_mean(x * x, window) - mx * mx, box_mean(x * y, window) - mx * my
    correlation = cxy / torch.sqrt(vx.clamp_min(0) * vy.clamp_min(0) + 1e-4)
    return (correlation * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)


def _contrast(image: torch.Tensor, window: int = BendParams.window) -> torch.Tensor:
    """The standard deviation of ``(N, 1, H, W)`` ``image`` over a ``window`` square around each pixel."""
    return window_stats(image, window)[1].clamp_min(0).sqrt()


def window_stats(image: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and variance of ``(N, 1, H, W)`` ``image`` over a ``window`` square around each pixel (the
    variance as the mean square less the squared mean: it may round below 0)."""
    mean = box_mean(image, window)
    return mean, box_mean(image * image, window) - mean * mean


def box_mean(image: torch.Tensor, window: int) -> torch.Tensor:
    """The mean over a ``window`` square around each pixel of ``(N, 1, H, W)`` ``image``."""
    # A box filter is separable, also at the borders, where only the pixels inside are counted.
    pad = window // 2
    image = F.avg_pool2d(image, (window, 1), stride=1, padding=(pad, 0), count_include_pad=False)
    return F.avg_pool2d(image, (1, window), stride=1, padding=(0, pad), count_include_pad=False)


def _area_change(flow: torch.Tensor) -> torch.Tensor:
    """How a backward flow ``(N, 2, H, W)`` in pixels scales area where it samples, ``det(I - grad flow)``:
    ``(N, H - 1, W - 1)``; at or below 0 the warp folds content over itself."""
    d_dy, d_dx = flow[..., 1:, :-1] - flow[..., :-1, :-1], flow[..., :-1, 1:] - flow[..., :-1, :-1]
    return (1 - d_dy[:, 0]) * (1 - d_dx[:, 1]) - d_dx[:, 0] * d_dy[:, 1]
