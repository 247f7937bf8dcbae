"""The fitting loop: gradient descent on one network so its maps turn A into B and B into A."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffmorph.config import MorphConfig
from diffmorph.errors import FitDivergedError
from diffmorph.model import MapNet
from diffmorph.ops import MapScales, coordinate_grid, morph_loss, resize

ProgressCallback = Callable[[int, float], None]
"""Called as ``progress(steps_done, current_loss)`` while fitting."""


@dataclass(frozen=True)
class FitResult:
    """What a fit produces.

    Attributes:
        maps: ``(16, 84, 84)`` float32 raw maps on the CPU (A->B channels 0-7, B->A 8-15); resize
            them bilinearly to any resolution to apply them.
        losses: the loss at every step, before that step's update.
        seconds: wall time of the fit.
    """

    maps: torch.Tensor
    losses: list[float]
    seconds: float


def scales_of(config: MorphConfig) -> MapScales:
    return MapScales(warp=config.warp_scale, mult=config.mult_scale, add=config.add_scale,
                     add_first=config.add_first)


def fit_maps(a: torch.Tensor, b: torch.Tensor, config: MorphConfig, device: torch.device, *,
             progress: ProgressCallback | None = None) -> FitResult:
    """Fit the maps of one pair by the classic method.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size, on any device; they are
            squashed to the square working resolution ``config.size`` for the fit.
        config: a validated config; uses size, steps, lr, seed and the map scales.
        device: where to fit.
        progress: optional callback, see :data:`ProgressCallback`.

    Returns:
        A :class:`FitResult`.

    Raises:
        FitDivergedError: the loss became NaN or infinite.
    """
    started = time.perf_counter()
    scales = scales_of(config)
    size = config.size

    # 1. Inputs at the working resolution. The network input M never changes, so it is resized to the
    #    network's 96 x 96 once here instead of at every step.
    a_work = resize(a.to(device), size, size, antialias=True)  # (1, 3, S, S)
    b_work = resize(b.to(device), size, size, antialias=True)
    grid = coordinate_grid(size, size, device=device)
    net_input = torch.cat((grid, a_work * 0.1, b_work * 0.1), dim=1)  # (1, 8, S, S)
    prepared = MapNet.prepare(net_input)  # (1, 8, 96, 96)

    # 2. Network and optimiser. Weights are drawn on the CPU so a seed means the same start everywhere.
    generator = torch.Generator().manual_seed(config.seed)
    net = MapNet(in_channels=net_input.shape[1], generator=generator).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, eps=1e-7)

    # 3. Gradient steps. Losses stay on the device and are read back in blocks: reading every step
    #    would stall a GPU. On a CPU reading is free, so progress and NaN checks are per step.
    sync_every = 1 if device.type == "cpu" else 25
    losses = torch.empty(config.steps, device=device)
    history: list[float] = []
    for step in range(config.steps):
        maps = resize(net(prepared), size, size)  # (1, 16, S, S)
        loss = morph_loss(net_input, a_work, b_work, maps, scales)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
        if (step + 1) % sync_every == 0 or step + 1 == config.steps:
            block = losses[len(history):step + 1].tolist()
            for offset, value in enumerate(block):
                if not math.isfinite(value):
                    raise FitDivergedError(
                        f"the fit diverged: loss became {value} at step {len(history) + offset + 1}; "
                        f"lower --lr (now {config.lr:g})")
            history.extend(block)
            if progress is not None:
                progress(len(history), history[-1])

    # 4. The maps of the fitted network. The network itself is discarded.
    with torch.no_grad():
        raw = net(prepared)[0].float().cpu()  # (16, 84, 84)
    return FitResult(maps=raw, losses=history, seconds=time.perf_counter() - started)
