"""When each frame is shown and at what strength: time, easing, holds, and even pacing.

A morph's frames sit at times ``t`` from 0 (A) to 1 (B), eased and held (:func:`timeline`). The strength of
the maps shown at time ``t`` is ``t`` itself (linear pacing, the original) or, with even pacing, a
:class:`Schedule` measured on small frames so that the picture changes by about the same amount at every
step. The frame makers in :mod:`diffmorph.render.frames` know nothing of time; this module knows nothing of
how frames are made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from diffmorph.threads import Mapper

EASES = ("linear", "in", "out", "in-out")


@dataclass(frozen=True)
class PaceParams:
    """How even pacing is measured (evidence in docs/method.md)."""

    samples: int = 64  # small frames that measure the change along the morph when the frame count is unknown
    first: int = 32  # as many, where the frames' own times are measured again after (the frame count is known)
    size: int = 192  # longest side of those frames


def frame_times(count: int) -> list[float]:
    """Evenly spaced times from 0 to 1, both included: frame ``i`` of ``N`` is at ``i / (N - 1)``.

    >>> frame_times(5)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if count < 2:
        raise ValueError(f"a morph needs at least 2 frames, got {count}")
    return [i / (count - 1) for i in range(count)]


def ease(t: float, curve: str) -> float:
    """Map linear time ``t`` in ``[0, 1]`` through an easing curve; every curve keeps 0 and 1 fixed.

    >>> [round(ease(0.25, c), 4) for c in ("linear", "in", "out", "in-out")]
    [0.25, 0.0625, 0.4375, 0.1562]
    """
    if curve == "linear":
        return t
    if curve == "in":
        return t * t
    if curve == "out":
        return 1.0 - (1.0 - t) ** 2
    if curve == "in-out":
        return t * t * (3.0 - 2.0 * t)
    raise ValueError(f"unknown ease {curve!r}")


def timeline(counts: list[int], fps: float, curve: str = "linear", hold: float = 0.0, *,
             pingpong: bool = False) -> list[tuple[int, float]]:
    """Every output frame as ``(segment, t)``, for segments of ``counts`` frames each (both ends included).

    A segment's first frame is dropped after the first segment (it is the previous one's last), so every
    image is shown exactly once where two segments meet; ``hold`` repeats each image for ``round(hold * fps)``
    more frames; ``pingpong`` plays the whole timeline forward, then backward back to the first frame.

    >>> timeline([3], fps=2, hold=1.0)
    [(0, 0.0), (0, 0.0), (0, 0.0), (0, 0.5), (0, 1.0), (0, 1.0), (0, 1.0)]
    >>> timeline([3, 3], fps=1)
    [(0, 0.0), (0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]
    """
    held = round(hold * fps)
    times: list[tuple[int, float]] = [(0, 0.0)] * held
    for segment, count in enumerate(counts):
        eased = [(segment, ease(t, curve)) for t in frame_times(count)]
        times += eased if segment == 0 else eased[1:]
        times += [(segment, 1.0)] * held
    if pingpong:
        times += times[-2::-1]
    return times


@dataclass(frozen=True)
class Schedule:
    """The strength shown at each time: strengths ``0 .. 1`` against the picture's cumulative change at each.

    Attributes:
        strengths: ``(N,)`` increasing from 0 to 1.
        travelled: ``(N,)`` the cumulative change (RMSE) of the picture from strength 0 to each.
    """

    strengths: np.ndarray
    travelled: np.ndarray

    def __call__(self, t: float) -> float:
        """The strength at time ``t``: the one at which the picture has made ``t`` of its whole change."""
        if t <= 0.0 or t >= 1.0:
            return t
        return float(np.interp(t * self.travelled[-1], self.travelled, self.strengths))


def even_schedule(frame: Callable[[float], torch.Tensor], frames: int | None,
                  params: PaceParams = PaceParams(), mapper: Mapper = map) -> Schedule:
    """Measure the change along a morph on small frames and time it evenly.

    The change between two frames is less than the sum of the changes in between where fine detail moves
    further than its own size, so where the frame count is known, ``params.first`` small frames make a first
    schedule, and the change is measured again between the frames it times.

    Args:
        frame: a frame at a strength, ``(1, 3, h, w)``, made small (at most ``params.size`` on a side).
        frames: the frames from A to B the morph is shown in, at times :func:`frame_times`, or None.
        mapper: renders the small frames (see :func:`~diffmorph.threads.frame_map`).
    """
    strengths = np.linspace(0.0, 1.0, (params.samples if frames is None else params.first) + 1)
    travelled = _travelled(frame, strengths, mapper)
    if frames is not None:
        strengths = np.interp(np.linspace(0.0, travelled[-1], frames), travelled, strengths)
        travelled = _travelled(frame, strengths, mapper)
    return Schedule(strengths, travelled)


def _travelled(frame: Callable[[float], torch.Tensor], strengths: np.ndarray, mapper: Mapper) -> np.ndarray:
    """The picture's cumulative change (RMSE) from the frame at ``strengths[0]`` to each frame."""
    steps, previous = [], None
    for current in mapper(frame, [float(strength) for strength in strengths]):
        if previous is not None:
            steps.append(float((current - previous).square().mean().sqrt()))  # RMSE
        previous = current
    # A tiny floor per step keeps the curve strictly increasing where nothing changes.
    return np.concatenate(([0.0], np.cumsum(np.asarray(steps) + 1e-9)))
