"""From fitted maps to frames at the images' own resolution."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from diffmorph.ops import MapScales, apply_maps, blend_frame, psnr, resize


def frame_times(count: int) -> list[float]:
    """Evenly spaced times from 0 to 1, both included: frame ``i`` of ``N`` is at ``i / (N - 1)``.

    >>> frame_times(5)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if count < 2:
        raise ValueError(f"a morph needs at least 2 frames, got {count}")
    return [i / (count - 1) for i in range(count)]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[-1, 1]`` to an ``(H, W, 3)`` uint8 array, rounding to the nearest level.

    >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)).tolist()
    [[[0, 128, 255]]]
    """
    levels = ((image[0] + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return levels.permute(1, 2, 0).contiguous().cpu().numpy()


class Renderer:
    """Applies a pair's maps at the images' resolution.

    The raw maps are smooth fields, so they are upsampled (bilinear) to the images' size once; each
    frame then costs two warps of the full-resolution images.

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
        full = resize(maps.unsqueeze(0).to(device), height, width)  # (1, 16, H, W)
        self.maps_ab = full[:, :8]
        self.maps_ba = full[:, 8:]

    @torch.no_grad()
    def frame(self, t: float) -> torch.Tensor:
        """The frame at time ``t`` in ``[0, 1]``: ``(1, 3, H, W)`` in ``[-1, 1]``."""
        return blend_frame(self.a, self.b, self.maps_ab, self.maps_ba, t, self.scales)

    @torch.no_grad()
    def a_to_b(self) -> torch.Tensor:
        """A with the A->B maps fully applied, clipped: how well the maps reproduce B."""
        return apply_maps(self.a, self.maps_ab, self.scales).clamp(-1.0, 1.0)

    @torch.no_grad()
    def b_to_a(self) -> torch.Tensor:
        """B with the B->A maps fully applied, clipped: how well the maps reproduce A."""
        return apply_maps(self.b, self.maps_ba, self.scales).clamp(-1.0, 1.0)

    def fidelity(self, a_to_b: torch.Tensor | None = None, b_to_a: torch.Tensor | None = None) -> dict[str, float]:
        """PSNR in dB of A fully mapped to B against B, and of B mapped to A against A.

        Args:
            a_to_b, b_to_a: the results of :meth:`a_to_b` and :meth:`b_to_a` if already computed.
        """
        a_to_b = self.a_to_b() if a_to_b is None else a_to_b
        b_to_a = self.b_to_a() if b_to_a is None else b_to_a
        return {"a_to_b_psnr": psnr(a_to_b, self.b), "b_to_a_psnr": psnr(b_to_a, self.a)}

    def frames(self, count: int) -> Iterator[np.ndarray]:
        """Yield ``count`` frames from A to B as ``(H, W, 3)`` uint8 arrays, one at a time."""
        for t in frame_times(count):
            yield to_uint8(self.frame(t))
