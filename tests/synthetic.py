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


def ball(centre: tuple[float, float], radius: float, colour: tuple[float, float, float],
         ground: tuple[float, float, float], seed: int, height: int = 128, width: int = 128) -> torch.Tensor:
    """A shaded ball on a plain ground with a fine grain of its own, ``(1, 3, H, W)`` in [-1, 1].

    ``centre`` and ``radius`` are fractions of the height and width (the ball is round on the square frame);
    radius 0 gives the ground alone.
    """
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij")
    radius = max(radius, 1e-6)
    dy, dx = (ys - centre[0]) / radius, (xs - centre[1]) / radius
    inside = ((1 - torch.hypot(dy, dx)) * radius * height + 0.5).clamp(0, 1)  # about a pixel of antialiasing
    light = (1.0 - 0.35 * (dy + dx)).clamp(0.3, 1.3)  # lit from the top left
    grain = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.04, (1, height, width))).float()
    surface = torch.tensor(ground).view(3, 1, 1) + grain
    image = surface * (1 - inside) + torch.tensor(colour).view(3, 1, 1) * light * inside
    return image.clamp(-1, 1)[None]


RED, YELLOW, SAND, MOSS = (0.7, -0.6, -0.7), (0.8, 0.6, -0.7), (0.3, 0.1, -0.2), (-0.6, -0.2, -0.7)


def pair_result(a: torch.Tensor, b: torch.Tensor, config, maps: torch.Tensor | None = None):
    """A one-segment :class:`~diffmorph.pipeline.MorphResult` of ``(1, 3, H, W)`` images: fitted on the CPU, or
    with the given ``(16, h, w)`` maps."""
    from diffmorph.optimize import fit_maps
    from diffmorph.pipeline import MorphResult, Segment

    if maps is not None:
        return MorphResult(images=[a, b], segments=[Segment(maps=maps, losses=[0.1])], config=config)
    fit = fit_maps(a, b, config.validate(), torch.device("cpu"))
    segment = Segment(maps=fit.maps, losses=fit.losses, fit_seconds=fit.seconds, start=fit.start)
    return MorphResult(images=[a, b], segments=[segment], config=config)
