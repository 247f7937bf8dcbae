"""A perceptual distance between frames: shift-tolerant LPIPS on AlexNet (ST-LPIPS, Ghildyal and Liu, ECCV 2022).

LPIPS compares two images through a network's features: each of five layers' activations is normalised over its
channels, the squared difference is weighted per channel by a learned linear layer and averaged over the image, and
the five layers' figures are summed. The shift-tolerant variant low-passes before every subsampling and after the
first convolution, so a shift of a pixel or two, which a morph's frames make all the time, costs almost nothing,
while a change of structure (melting, a second silhouette) costs what it costs a person.

The network is built here; its weights come from the ``stlpips-pytorch`` wheel on the package index (the
``[eval]`` extra), read from the installed package's files without importing it. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffmorph.errors import DiffmorphError
from diffmorph.ops import resize

WEIGHTS_PACKAGE = "stlpips_pytorch"
WEIGHTS_FILE = Path("weights", "vST0.0", "alex_shift_tolerant.pth")
# Channels of the five compared layers of AlexNet.
CHANNELS = (64, 192, 384, 256, 256)
MIN_SIDE = 32  # the least side of a compared frame: the network's first convolutions and pools need it


class MissingExtraError(DiffmorphError):
    """An optional extra that a feature needs is not installed."""


def _blur_pool(x: torch.Tensor) -> torch.Tensor:
    """A [1 2 1] x [1 2 1] binomial low-pass then every second pixel, reflect-padded by 2: the anti-aliased
    subsampling of the shift-tolerant network."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, stride=2, groups=x.shape[1])


class ShiftTolerantAlexNet(nn.Module):
    """AlexNet's five convolutions with blurred subsampling; returns the activations LPIPS compares."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, 11, padding=2), nn.Conv2d(64, 192, 5, padding=2), nn.Conv2d(192, 384, 3, padding=1),
            nn.Conv2d(384, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1)])
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS])
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, 3, H, W)`` in ``[-1, 1]`` to the five layers' activations."""
        x = (x - self.shift) / self.scale
        first = F.relu(_blur_pool(self.convs[0](x)))
        second = F.relu(self.convs[1](_blur_pool(F.max_pool2d(first, 3, stride=1))))
        third = F.relu(self.convs[2](_blur_pool(F.max_pool2d(second, 3, stride=1))))
        fourth = F.relu(self.convs[3](third))
        return [first, second, third, fourth, F.relu(self.convs[4](fourth))]

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ST-LPIPS between ``(N, 3, H, W)`` images in ``[-1, 1]``, pair by pair: ``(N,)``."""
        return self.compared([_unit(f) for f in self.features(x)], [_unit(f) for f in self.features(y)])

    def compared(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
        """ST-LPIPS from two images' unit-length features (see :meth:`features`), item by item: ``(N,)``."""
        total = torch.zeros(xs[0].shape[0], dtype=xs[0].dtype, device=xs[0].device)
        for lin, fx, fy in zip(self.lins, xs, ys, strict=True):
            total += lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)


def weights_path() -> Path:
    """Where the installed ``stlpips-pytorch`` wheel keeps the shift-tolerant AlexNet's weights.

    Raises:
        MissingExtraError: the wheel is not installed.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise MissingExtraError("the perceptual metrics need the [eval] extra: pip install 'diffmorph[eval]' "
                            "(or: pip install stlpips-pytorch)")


@lru_cache(maxsize=1)
def metric() -> ShiftTolerantAlexNet:
    """The ST-LPIPS network with its weights, on the CPU in float32, built once per process."""
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    renamed = {"shift": state["scaling_layer.shift"], "scale": state["scaling_layer.scale"]}
    for index, key in enumerate(("slice1.0", "slice2.5", "slice3.9", "slice4.11", "slice5.13")):
        renamed[f"convs.{index}.weight"] = state[f"net.{key}.weight"]
        renamed[f"convs.{index}.bias"] = state[f"net.{key}.bias"]
    for index in range(len(CHANNELS)):
        renamed[f"lins.{index}.weight"] = state[f"lin{index}.model.1.weight"]
    network = ShiftTolerantAlexNet()
    network.load_state_dict(renamed)
    return network.eval().requires_grad_(False)


class PerceptualPath:
    """ST-LPIPS between consecutive frames, fed one frame at a time (a video need not fit in memory).

    Frames are compared at ``size`` pixels on their longer side, as morphing papers compare them (a distance
    between 1024-pixel frames would weigh detail that no viewer of the whole frame sees), in batches of ``batch``.

    Args:
        size: longer side, in pixels, of the compared frames.
        batch: frames whose features are computed at once.
    """

    def __init__(self, size: int = 256, batch: int = 8):
        self.network = metric()
        self.size, self.batch = size, batch
        self.steps: list[float] = []
        self._pending: list[torch.Tensor] = []
        self._last: list[torch.Tensor] | None = None

    def add(self, frame: np.ndarray | torch.Tensor) -> None:
        """One frame, ``(H, W, 3)`` uint8 (a NumPy array or a tensor), after the ones before it."""
        image = torch.tensor(np.asarray(frame)).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, H, W)
        height, width = image.shape[-2:]
        scale = self.size / max(height, width)
        if scale < 1:
            image = resize(image, max(1, round(height * scale)), max(1, round(width * scale)), antialias=True)
        # The first layers need MIN_SIDE pixels: a smaller (or very thin) frame is padded, its edge repeated.
        short_y, short_x = (max(0, MIN_SIDE - side) for side in image.shape[-2:])
        if short_y or short_x:
            image = F.pad(image, (short_x // 2, short_x - short_x // 2, short_y // 2, short_y - short_y // 2),
                          mode="replicate")
        self._pending.append(image)
        if len(self._pending) >= self.batch:
            self._flush()

    def finish(self) -> list[float]:
        """The distance of every frame from the one before it."""
        self._flush()
        return self.steps

    def _flush(self) -> None:
        if not self._pending:
            return
        with torch.inference_mode():
            features = [_unit(f) for f in self.network.features(torch.cat(self._pending))]  # per layer (N, C, h, w)
            self._pending = []
            if self._last is not None:
                features = [torch.cat((last, f)) for last, f in zip(self._last, features, strict=True)]
            self._last = [f[-1:] for f in features]
            if features[0].shape[0] < 2:
                return
            total = self.network.compared([f[:-1] for f in features], [f[1:] for f in features])  # (N - 1,)
        self.steps.extend(total.tolist())
