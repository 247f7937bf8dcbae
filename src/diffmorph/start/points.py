"""Point hints: pairs of points a user pins to each other, which the start and the fit honour.

A hint is a point on A and its partner on B, each in its own image's pixels (``ax, ay, bx, by``). The start
is moved so that it carries each hinted point onto its partner exactly, smoothly around them and not at all
far from them (:func:`hinted`): what the user did not point at keeps the start found for it. The fit then
keeps the points together as a soft term of its loss (``FitParams.hint_weight``). Hints live in the frame's
fractions ``(ay, ax, by, bx)`` from its top-left corner, pixel centres at ``(i + 0.5) / n``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from diffmorph.errors import ConfigError
from diffmorph.io.images import Framing
from diffmorph.loss import hint_misses, sample_points
from diffmorph.model import MAP_SIZE
from diffmorph.start import Start

HEADER = ("ax", "ay", "bx", "by")


@dataclass(frozen=True)
class HintParams:
    """How point hints move the start (evidence in docs/method.md)."""

    # Gaussian radius, as a share of the frame, over which a hint moves the start around its point: a subject's
    # size. Far beyond it the start is the one found without hints.
    spread: float = 0.25


def read_points(path: str | Path) -> np.ndarray:
    """A hints file: CSV with the header ``ax,ay,bx,by`` and one pair of points a line, in each image's pixels.

    Returns:
        ``(N, 4)`` float64 as the file gives them.

    Raises:
        ConfigError: a missing or malformed file, naming the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the points file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    rows = text.splitlines()
    if not rows or tuple(cell.strip() for cell in rows[0].split(",")) != HEADER:
        raise ConfigError(f"points file {path}, line 1: the header must be {','.join(HEADER)}")
    return parse_points(rows[1:], f"points file {path}", first_line=2)


def parse_points(lines: Sequence[str], where: str, first_line: int = 1) -> np.ndarray:
    """Lines of ``ax,ay,bx,by`` (blank lines skipped) as ``(N, 4)`` float64.

    Raises:
        ConfigError: a line that is not four numbers, or none at all, naming ``where`` and the line.
    """
    points = []
    for number, row in enumerate(csv.reader(lines), start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        try:
            values = [float(cell) for cell in row]
        except ValueError:
            values = []
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{where}, line {number}: give four numbers, ax,ay,bx,by")
        points.append(values)
    if not points:
        raise ConfigError(f"{where} has no points; give one pair a line, ax,ay,bx,by")
    return np.asarray(points, dtype=np.float64)


def in_frame(points: np.ndarray, framing_a: Framing, framing_b: Framing, where: str) -> torch.Tensor:
    """Hints in each image's pixels as the frame's fractions ``(N, 4)`` ``(ay, ax, by, bx)``, each through the
    way its image was fitted to the first image's frame.

    Raises:
        ConfigError: not ``(N, 4)`` finite numbers, or a point outside its image (``where`` names the hints).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 4 or len(points) == 0:
        raise ConfigError(f"{where}: give point pairs as rows of ax, ay, bx, by")
    for number, (ax, ay, bx, by) in enumerate(points, start=1):
        if not all(math.isfinite(v) for v in (ax, ay, bx, by)):
            raise ConfigError(f"{where}, pair {number}: a coordinate is not a number")
        for name, (x, y), (width, height) in (("A", (ax, ay), framing_a.source_size),
                                              ("B", (bx, by), framing_b.source_size)):
            if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                raise ConfigError(f"{where}, pair {number}: ({x:g}, {y:g}) is outside {name}, which is "
                                  f"{width} x {height} pixels")
    width, height = framing_a.frame_size
    ax, ay = _framed(points[:, 0], points[:, 1], framing_a)
    bx, by = _framed(points[:, 2], points[:, 3], framing_b)
    fractions = np.stack(((ay + 0.5) / height, (ax + 0.5) / width, (by + 0.5) / height, (bx + 0.5) / width), axis=1)
    outside = np.flatnonzero(((fractions < 0) | (fractions > 1)).any(axis=1))
    if len(outside):
        raise ConfigError(f"{where}, pair {outside[0] + 1}: the point falls outside the frame once its image is "
                          f"fitted to the first one's (--fit {framing_b.method})")
    for columns, name in ((slice(0, 2), "A"), (slice(2, 4), "B")):  # two pins on one spot contradict each other
        spots = fractions[:, columns] * (height, width)
        apart = np.hypot(*(spots[:, None] - spots[None]).transpose(2, 0, 1)) + np.eye(len(spots)) * 1e9
        if apart.min() < 1.0:
            first, second = sorted(np.unravel_index(apart.argmin(), apart.shape))
            raise ConfigError(f"{where}: pairs {first + 1} and {second + 1} are less than a pixel apart on {name}; "
                              f"give one of them")
    return torch.from_numpy(fractions.astype(np.float32))


def _framed(x: np.ndarray, y: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """An image's pixel coordinates ``x, y`` where its content lands in the frame (as ``fit_to_frame`` places
    it)."""
    (src_w, src_h), (width, height) = framing.source_size, framing.frame_size
    if (src_w, src_h) == (width, height):
        return x, y
    if framing.method == "stretch":
        return (x + 0.5) * width / src_w - 0.5, (y + 0.5) * height / src_h - 0.5
    if framing.method == "crop":
        scale = max(width / src_w, height / src_h)
        new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
        left, top = -((new_w - width) // 2), -((new_h - height) // 2)
    else:
        scale = min(width / src_w, height / src_h)
        new_w, new_h = max(1, min(width, round(src_w * scale))), max(1, min(height, round(src_h * scale)))
        left, top = (width - new_w) // 2, (height - new_h) // 2
    return (x + 0.5) * new_w / src_w - 0.5 + left, (y + 0.5) * new_h / src_h - 0.5 + top


def hinted(start: Start, hints: torch.Tensor, warp_scale: float, params: HintParams = HintParams()) -> Start:
    """``start`` moved so that its warps carry each hinted point onto its partner, and free everywhere.

    A->B lives on B's grid and fetches from A: at each ``b`` it must reach back by ``b - a``; B->A the reverse.
    What ``start`` misses at the points is spread around them by Gaussians of ``params.spread`` (solved so that
    the points themselves are met exactly) and added to it.
    """
    size = MAP_SIZE if start.maps is None else start.maps.shape[-1]
    maps = torch.zeros(16, size, size) if start.maps is None else start.maps.clone()
    a, b = hints[:, 0:2].double(), hints[:, 2:4].double()
    for channels, ends, starts_at in ((slice(6, 8), b, a), (slice(14, 16), a, b)):
        field = maps[channels].double() * warp_scale  # fractions of the frame
        missing = (ends - starts_at) - sample_points(field, ends)  # (N, 2)
        maps[channels] += (_spread(ends, missing, size, params.spread) / warp_scale).float()
    points = tuple(tuple(round(float(v), 6) for v in point) for point in hints.tolist())
    return replace(start, maps=maps, free=None, guide=_joined(start.guide, f"{len(hints)} point pair(s) pinned"),
                   points=points)


def _spread(points: torch.Tensor, values: torch.Tensor, size: int, spread: float) -> torch.Tensor:
    """A smooth field ``(2, size, size)`` equal to ``values`` at ``points``, fading to 0 over ``spread``."""
    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(x[:, None] - y[None]).square().sum(-1) / (2 * spread**2))

    weights = torch.linalg.solve(kernel(points, points) + 1e-9 * torch.eye(len(points), dtype=points.dtype),
                                 values)
    centres = (torch.arange(size, dtype=points.dtype) + 0.5) / size
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).view(-1, 2)
    return (kernel(grid, points) @ weights).T.reshape(2, size, size)


def _joined(*lines: str | None) -> str | None:
    return "; ".join(line for line in lines if line) or None


def landing_errors(maps: torch.Tensor, hints: torch.Tensor, warp_scale: float, width: int, height: int
                   ) -> list[float]:
    """For each hint, how far in the frame's pixels the fitted A->B warp lands A's point from where B's partner
    fetches it, the larger of that and the same for B->A."""
    misses = hint_misses(maps.double(), hints.double(), warp_scale) * torch.tensor([height, width]).double()
    return misses.norm(dim=-1).amax(dim=0).tolist()


def as_hints(values: Sequence[Sequence[float]]) -> torch.Tensor:
    """Hints stored as plain numbers (a maps file's record) back as ``(N, 4)``."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 4)
