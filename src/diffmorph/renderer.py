"""From fitted maps to frames at the images' own resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffmorph.ops import (
    MapScales,
    flow_from_warp_map,
    psnr,
    recolour,
    resize,
    sample,
    sampling_grid,
)


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


def timeline(count: int, fps: float, curve: str = "linear", hold: float = 0.0) -> list[float]:
    """The time of every output frame: A held, ``count`` eased frames from A to B, then B held.

    >>> timeline(3, fps=2, hold=1.0)
    [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    """
    held = round(hold * fps)
    return [0.0] * held + [ease(t, curve) for t in frame_times(count)] + [1.0] * held


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[-1, 1]`` to an ``(H, W, 3)`` uint8 array, rounding to the nearest level.

    >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)).tolist()
    [[[0, 128, 255]]]
    """
    levels = ((image[0] + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return levels.permute(1, 2, 0).contiguous().cpu().numpy()


@dataclass(frozen=True)
class _Direction:
    """One direction's maps at full resolution, prepared so a frame costs few passes over memory."""

    image: torch.Tensor  # (1, 3, H, W) the image this direction moves
    mult: torch.Tensor  # (1, 3, H, W) raw mult map
    add: torch.Tensor  # (1, 3, H, W) raw add map
    grid: torch.Tensor  # (1, H, W, 2) sampling grid of the full warp


class Renderer:
    """Applies a pair's maps at the images' resolution.

    The raw maps are smooth fields, so they are upsampled (bilinear) to the images' size once, and
    each direction's sampling grid is built once: the grid at strength ``s`` is
    ``lerp(identity, full grid, s)``. A frame then costs two recolourings, two bilinear samplings
    and a blend.

    Args:
        maps: ``(16, h, w)`` raw maps from a fit (any resolution).
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]``, B already fitted to A's frame.
        scales: the map strengths the maps were fitted with.
        device: where to render.
    """

    def __init__(self, maps: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scales: MapScales,
                 device: torch.device):
        if a.shape != b.shape or a.dim() != 4 or a.shape[:2] != (1, 3):
            raise ValueError(f"a and b must both be (1, 3, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
        height, width = a.shape[-2:]
        self.scales = scales
        self.a = a.to(device)
        self.b = b.to(device)
        self._identity = sampling_grid(torch.zeros(1, 2, height, width, device=device))  # (1, H, W, 2)
        self._directions = (self._prepare(self.a, maps[:8], device), self._prepare(self.b, maps[8:], device))

    def _prepare(self, image: torch.Tensor, maps: torch.Tensor, device: torch.device) -> _Direction:
        height, width = image.shape[-2:]
        colour = resize(maps[0:6].unsqueeze(0).to(device), height, width)  # (1, 6, H, W)
        warp_map = resize(maps[6:8].unsqueeze(0).to(device), height, width)  # (1, 2, H, W)
        grid = sampling_grid(flow_from_warp_map(warp_map, self.scales.warp))  # (1, H, W, 2)
        return _Direction(image=image, mult=colour[:, 0:3], add=colour[:, 3:6], grid=grid)

    def _moved(self, direction: _Direction, strength: float) -> torch.Tensor:
        coloured = recolour(direction.image, direction.mult, direction.add, self.scales, strength)
        return sample(coloured, torch.lerp(self._identity, direction.grid, strength)).clamp_(-1.0, 1.0)

    @torch.no_grad()
    def frame(self, t: float) -> torch.Tensor:
        """The frame at time ``t`` in ``[0, 1]``: ``(1, 3, H, W)`` in ``[-1, 1]``.

        Equal to :func:`diffmorph.ops.blend_frame` on the full-resolution maps, in fewer passes.
        """
        a_moved = self._moved(self._directions[0], t)
        b_moved = self._moved(self._directions[1], 1.0 - t)
        return torch.lerp(a_moved, b_moved, t)

    @torch.no_grad()
    def a_to_b(self) -> torch.Tensor:
        """A with the A->B maps fully applied, clipped: how well the maps reproduce B."""
        return self._moved(self._directions[0], 1.0)

    @torch.no_grad()
    def b_to_a(self) -> torch.Tensor:
        """B with the B->A maps fully applied, clipped: how well the maps reproduce A."""
        return self._moved(self._directions[1], 1.0)

    def fidelity(self, a_to_b: torch.Tensor | None = None, b_to_a: torch.Tensor | None = None) -> dict[str, float]:
        """PSNR in dB of A fully mapped to B against B, and of B mapped to A against A.

        Args:
            a_to_b, b_to_a: the results of :meth:`a_to_b` and :meth:`b_to_a` if already computed.
        """
        a_to_b = self.a_to_b() if a_to_b is None else a_to_b
        b_to_a = self.b_to_a() if b_to_a is None else b_to_a
        return {"a_to_b_psnr": psnr(a_to_b, self.b), "b_to_a_psnr": psnr(b_to_a, self.a)}

    @torch.no_grad()
    def forward_flows(self) -> dict[str, np.ndarray]:
        """The fitted correspondence as forward flows, in :mod:`diffmorph.io.flow`'s layout.

        The B->A warp is a backward map on A's grid (A at ``p`` shows B at ``p - flow``), so the forward
        flow from A to B is its negation, exactly; likewise B to A from the A->B warp.

        Returns:
            ``{"a_to_b": (H, W, 2), "b_to_a": (H, W, 2)}`` float32 arrays, channel 0 = dx, 1 = dy.
        """
        flows = {}
        for name, direction in (("a_to_b", self._directions[1]), ("b_to_a", self._directions[0])):
            source = direction.grid - self._identity  # (1, H, W, 2): normalized (x, y) sample offsets
            height, width = source.shape[1:3]
            pixels = source[0] * torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], device=source.device)
            flows[name] = pixels.float().cpu().numpy()  # sample offset = -(dx, dy) of the warp
        return flows
