"""The high-level Python API: ``morph`` two images, get a typed result, render or save it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from diffmorph._version import __version__
from diffmorph.config import MorphConfig
from diffmorph.errors import ConfigError
from diffmorph.io.images import (
    DEFAULT_MAX_PIXELS,
    Framing,
    ImageSource,
    fit_to_frame,
    from_uint16,
    load_image,
    to_tensor,
    to_uint16,
)
from diffmorph.io.mapsfile import MapsFileContents, read_maps_file, write_maps_file
from diffmorph.io.outputs import replacing
from diffmorph.ops import resize
from diffmorph.optimize import ProgressCallback, fit_maps, scales_of
from diffmorph.renderer import Renderer, timeline, to_uint8
from diffmorph.start import Alignment, SubjectMove


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a ``--device`` value.

    "auto" picks CUDA, then Apple MPS, then the CPU.

    Raises:
        ConfigError: unknown device name, or a device this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} asked for, but Apple MPS is not available here; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


@dataclass
class MorphResult:
    """A fitted morph: the maps, the two images they apply to, and how they were made.

    Attributes:
        maps: ``(16, h, w)`` raw maps (A->B channels 0-7, B->A 8-15), any resolution.
        image_a: ``(1, 3, H, W)`` A in ``[-1, 1]``.
        image_b: ``(1, 3, H, W)`` B fitted to A's frame, in ``[-1, 1]``.
        config: the settings of the fit (frames and fps are the defaults for rendering).
        losses: the fit's loss at every step.
        framing: how B was fitted to A's frame.
        fit_seconds: wall time of the fit.
        alignment: the move of the whole picture the warp started from (``--align auto``), or None;
            known after a fit only (maps files do not keep it; the maps include it).
        bent: whether the warp started from that move (or none) bent region by region; after a fit only.
        subject: the move of the pair's one subject that the warp carried it by, or None; after a fit only.
    """

    maps: torch.Tensor
    image_a: torch.Tensor
    image_b: torch.Tensor
    config: MorphConfig
    losses: list[float] = field(default_factory=list)
    framing: Framing | None = None
    fit_seconds: float = float("nan")
    alignment: Alignment | None = None
    bent: bool = False
    subject: SubjectMove | None = None

    @property
    def size(self) -> tuple[int, int]:
        """Output ``(width, height)``: A's own size, or ``config.width`` wide with A's aspect ratio."""
        width, height = self.image_a.shape[-1], self.image_a.shape[-2]
        if self.config.width in (0, width):
            return width, height
        return self.config.width, max(1, round(height * self.config.width / width))

    def renderer(self, device: str | torch.device | None = None, *, frames: int | None = None) -> Renderer:
        """A :class:`~diffmorph.renderer.Renderer` at :attr:`size` on ``device`` (the config's by default).

        Args:
            frames: the frames from A to B it will render, evenly spaced in time, so that even pacing
                evens out the change between those frames in particular.
        """
        target = device if isinstance(device, torch.device) else resolve_device(device or self.config.device)
        width, height = self.size
        a, b = (resize(image, height, width, antialias=True).clamp(-1.0, 1.0) for image in (self.image_a, self.image_b))
        return Renderer(self.maps, a, b, scales_of(self.config), target, mode=self.config.mode,
                        pacing=self.config.frame_pacing, frames=frames)

    def fidelity(self) -> dict[str, float]:
        """PSNR in dB of A fully mapped to B against B, and of B mapped to A against A."""
        return self.renderer().fidelity()

    def save(self, path: str | Path) -> None:
        """Write a maps file (see :mod:`diffmorph.io.mapsfile`); it appears at ``path`` only when complete."""
        with replacing(path) as temp:
            write_maps_file(temp, self.contents(), __version__)

    def contents(self) -> MapsFileContents:
        source = self.framing.source_size if self.framing else self.size
        return MapsFileContents(maps=self.maps.float().cpu(), image_a=to_uint16(self.image_a[0].cpu()),
                                image_b=to_uint16(self.image_b[0].cpu()),
                                losses=torch.tensor(self.losses, dtype=torch.float32), config=self.config,
                                b_source_size=source, fit_seconds=self.fit_seconds)

    @classmethod
    def load(cls, path: str | Path) -> MorphResult:
        """Read a maps file written by :meth:`save` or ``diffmorph morph``."""
        contents = read_maps_file(path)
        height, width = contents.image_a.shape[-2:]
        framing = Framing(method=contents.config.fit, source_size=contents.b_source_size,
                          frame_size=(width, height))
        return cls(maps=contents.maps, image_a=from_uint16(contents.image_a).unsqueeze(0),
                   image_b=from_uint16(contents.image_b).unsqueeze(0), config=contents.config,
                   losses=contents.losses.tolist(), framing=framing, fit_seconds=contents.fit_seconds)


def configured(config: MorphConfig | None, overrides: dict[str, object]) -> MorphConfig:
    """``config`` (defaults when None) with ``overrides`` applied, validated.

    Raises:
        ConfigError: an unknown field or a value out of range.
    """
    try:
        return replace(config or MorphConfig(), **overrides).validate()
    except TypeError as exc:
        raise ConfigError(f"unknown setting: {exc}") from None


def prepare_images(sources: list[ImageSource], labels: list[str], config: MorphConfig, *,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[torch.Tensor], list[Framing]]:
    """Decode images and fit every one after the first to the first one's frame.

    Returns:
        The images as ``(1, 3, H, W)`` tensors in ``[-1, 1]`` at the first one's size, and how each
        image after the first was fitted.
    """
    decoded = [load_image(source, background=config.background, max_pixels=max_pixels, label=label)
               for source, label in zip(sources, labels, strict=True)]
    height, width = decoded[0].shape[:2]
    fitted = [fit_to_frame(image, width, height, config.fit, config.background) for image in decoded[1:]]
    tensors = [to_tensor(image) for image in [decoded[0], *(image for image, _ in fitted)]]
    return tensors, [framing for _, framing in fitted]


def prepare_pair(a: ImageSource, b: ImageSource, config: MorphConfig, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, torch.Tensor, Framing]:
    """Decode A and B and fit B to A's frame.

    Returns:
        A and B as ``(1, 3, H, W)`` tensors in ``[-1, 1]`` at A's size, and how B was fitted.
    """
    (image_a, image_b), (framing,) = prepare_images([a, b], ["A", "B"], config, max_pixels=max_pixels)
    return image_a, image_b, framing


def morph(a: ImageSource, b: ImageSource, config: MorphConfig | None = None, *,
          progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
          **overrides: object) -> MorphResult:
    """Fit the maps that morph image ``a`` into image ``b``.

    Args:
        a, b: paths, PIL images or arrays (see :func:`diffmorph.io.images.load_image`). The morph
            has A's size; B is fitted to A's frame by ``config.fit``.
        config: settings; defaults when omitted.
        progress: optional ``progress(steps_done, loss)`` callback.
        max_pixels: refuse larger inputs.
        **overrides: config fields to change, e.g. ``steps=300``.

    Returns:
        A :class:`MorphResult`.

    Example::

        result = diffmorph.morph("cat.jpg", "dog.jpg", steps=500)
        frames = list(diffmorph.render(result, frames=30))
    """
    config = configured(config, overrides)
    resolve_device(config.device)
    image_a, image_b, framing = prepare_pair(a, b, config, max_pixels=max_pixels)
    return fit_pair(image_a, image_b, config, framing=framing, progress=progress)


def fit_pair(image_a: torch.Tensor, image_b: torch.Tensor, config: MorphConfig, *, framing: Framing | None = None,
             progress: ProgressCallback | None = None) -> MorphResult:
    """Fit the maps of a pair already decoded by :func:`prepare_pair`.

    Args:
        image_a, image_b: ``(1, 3, H, W)`` in ``[-1, 1]``, the same size.
        config: validated settings.
    """
    fitted = fit_maps(image_a, image_b, config, resolve_device(config.device), progress=progress)
    return MorphResult(maps=fitted.maps, image_a=image_a, image_b=image_b, config=config, losses=fitted.losses,
                       framing=framing, fit_seconds=fitted.seconds, alignment=fitted.alignment,
                       bent=fitted.bent, subject=fitted.subject)


def render(result: MorphResult, *, frames: int | None = None,
           device: str | torch.device | None = None) -> Iterator[np.ndarray]:
    """Yield the morph's frames, A first and B last, as ``(H, W, 3)`` uint8 arrays at A's size.

    The config's ``ease``, ``hold`` and ``pacing`` set the timing (``hold`` repeats the first and last
    frames), its ``mode`` how frames are made.

    Args:
        frames: frames from A to B (by default the config's ``frames``, or its ``durations``); at least 2.
    """
    config = result.config if frames is None else replace(result.config, frames=frames, durations=())
    (count,) = config.validate().segment_frames(1)
    renderer = replace(result, config=config).renderer(device, frames=count)
    return (to_uint8(renderer.frame(t)) for t in timeline(count, config.fps, config.ease, config.hold))


def save_maps(result: MorphResult, path: str | Path) -> None:
    """Write ``result`` to a maps file; same as ``result.save(path)``."""
    result.save(path)


def load_maps(path: str | Path) -> MorphResult:
    """Read a maps file; same as ``MorphResult.load(path)``."""
    return MorphResult.load(path)
