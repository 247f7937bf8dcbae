"""Small synthetic images made in code: no downloads, no copyrighted files."""

from __future__ import annotations

import numpy as np
import torch

from diffmorph.ops import warp


def blobs(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful image: a few Gaussian blobs on a gradient, ``(H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    image = np.stack([xs * 0.5 + 0.2, ys * 0.4 + 0.3, 0.6 - xs * 0.3], axis=-1)
    for _ in range(4):
        cy, cx = rng.uniform(0.25, 0.75, 2)
        colour = rng.uniform(0, 1, 3)
        weight = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 0.02)[..., None]
        image = image * (1 - weight) + colour * weight
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def shifted_pair(size: int = 64, shift: tuple[float, float] = (3.0, 4.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """A and B = A warped by a constant flow (dy, dx) in pixels, both ``(1, 3, S, S)`` in [-1, 1]."""
    a = torch.from_numpy(blobs(size, size)).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
    flow = torch.tensor(shift).view(1, 2, 1, 1).expand(1, 2, size, size)
    return a, warp(a, flow)


