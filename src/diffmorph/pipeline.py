"""The one pipeline: images in, a fitted :class:`MorphResult` out, frames from it.

A pair is a chain of one segment: :func:`morph` fits segment ``k`` from image ``k`` to image ``k + 1`` (and,
with ``loop``, a last one back to the first); :func:`render` yields the frames of every segment in turn;
:func:`diffmorph.export.export` writes them. Every image after the first is fitted to the first one's frame.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from diffmorph._version import __version__
from diffmorph.config import DEFAULT_FORMATS, DEFAULT_MAX_PIXELS, MorphConfig
from diffmorph.device import resolve_device
from diffmorph.errors import ConfigError
from diffmorph.io.images import (
    Framing,
    ImageSource,
    fit_to_frame,
    from_uint16,
    header_size,
    load_image,
    to_tensor,
    to_uint16,
)
from diffmorph.io.mapsfile import MapsFileContents, read_maps_file, write_maps_file
from diffmorph.io.outputs import replacing
from diffmorph.ops import resize, scales_of
from diffmorph.optimize import ProgressCallback, find_starts, fit_batch
from diffmorph.params import Params
from diffmorph.plan import Plan, make_plan, render_config
from diffmorph.render import Renderer, fidelity, to_uint8
from diffmorph.start import StartRecord
from diffmorph.start.masks import MASK_MODES, load_masks, masked
from diffmorph.start.points import hinted, in_frame, read_points
from diffmorph.threads import CpuTimes, frame_map, using_threads

PointsSource = np.ndarray | str | Path | None  # one segment's point hints: an array, a CSV file, or none

NOT_RECORDED = "not recorded (a maps file from an earlier diffmorph)"  # the start of a file that did not store it


@dataclass
class Segment:
    """One fitted segment: the maps that morph one image into the next.

    Attributes:
        maps: ``(16, h, w)`` raw maps (A->B channels 0-7, B->A 8-15), any resolution.
        losses: the fit's loss at every step.
        fit_seconds: wall time of the fit (for segments fitted side by side, their share of it).
        start: what the warp started from, found before the fit and stored with the maps; None where unknown.
    """

    maps: torch.Tensor
    losses: list[float] = field(default_factory=list)
    fit_seconds: float = math.nan
    start: StartRecord | None = None

    def describe_start(self) -> str | None:
        """One line on where the warp started, or None where it started from nothing."""
        return self.start.describe() if self.start is not None else None


@dataclass
class MorphResult:
    """A fitted morph of two or more images: one segment per consecutive pair.

    Attributes:
        images: ``(1, 3, H, W)`` each in ``[-1, 1]``, in order, all at the first one's size.
        segments: segment ``k`` morphs ``images[k]`` into ``images[k + 1]``; with ``loop`` the last one
            morphs the last image into the first.
        config: the settings of the fit (its render settings are the defaults for rendering).
        loop: whether the last segment goes back to the first image.
        source_sizes: ``(width, height)`` of each image as decoded, before fitting to the first's frame.
    """

    images: list[torch.Tensor]
    segments: list[Segment]
    config: MorphConfig
    loop: bool = False
    source_sizes: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.segments) != len(self.images) - 1 + self.loop or not self.segments:
            raise ValueError(f"{len(self.images)} images{' in a loop' if self.loop else ''} need "
                             f"{len(self.images) - 1 + self.loop} segments, got {len(self.segments)}")
        if not self.source_sizes:
            width, height = self.images[0].shape[-1], self.images[0].shape[-2]
            self.source_sizes = [(width, height)] * len(self.images)

    @property
    def size(self) -> tuple[int, int]:
        """Output ``(width, height)``: the first image's own size, or ``config.width`` wide with its aspect."""
        return self.config.output_size(self.images[0].shape[-1], self.images[0].shape[-2])

    @property
    def framings(self) -> list[Framing]:
        """How each image after the first was fitted to the first one's frame."""
        width, height = self.images[0].shape[-1], self.images[0].shape[-2]
        return [Framing(self.config.fit, source, (width, height)) for source in self.source_sizes[1:]]

    def pair(self, segment: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two images ``segment`` morphs between."""
        return self.images[segment], self.images[(segment + 1) % len(self.images)]

    def renderer(self, segment: int = 0, device: str | torch.device | None = None, *, frames: int | None = None,
                 params: Params = Params()) -> Renderer:
        """A :class:`~diffmorph.render.Renderer` of ``segment`` at :attr:`size` on ``device`` (the config's
        by default).

        Args:
            frames: the frames from A to B it will render, evenly spaced in time, so that even pacing
                evens out the change between those frames in particular.
        """
        target = device if isinstance(device, torch.device) else resolve_device(device or self.config.device)
        width, height = self.size
        a, b = (resize(image, height, width, antialias=True).clamp(-1.0, 1.0) for image in self.pair(segment))
        return Renderer(self.segments[segment].maps, a, b, scales_of(self.config), target, mode=self.config.mode,
                        pacing=self.config.frame_pacing, frames=frames, params=params.frames, pace=params.pace)

    def plan(self, settings: dict[str, object] | None = None, *, formats: Sequence[str] = DEFAULT_FORMATS,
             pingpong: bool = False, device: str | torch.device | None = None, params: Params = Params()) -> Plan:
        """The plan of rendering this morph: its own settings, with the render ``settings`` that are not None
        changed (any of :data:`~diffmorph.config.RENDER_SETTINGS`)."""
        return make_plan(render_config(self.config, settings or {}), len(self.images), loop=self.loop,
                         formats=tuple(formats), pingpong=pingpong, device=device, fit=params.fit)

    def fidelity(self, segment: int = 0) -> dict[str, float]:
        """PSNR in dB of A fully mapped to B against B, and of B mapped to A against A, for ``segment``."""
        return fidelity(self.renderer(segment))

    def save(self, path: str | Path) -> None:
        """Write a maps file (see :mod:`diffmorph.io.mapsfile`); it appears at ``path`` only when complete."""
        with replacing(path) as temp:
            write_maps_file(temp, self.contents(), __version__)

    def contents(self) -> MapsFileContents:
        """What the maps file holds."""
        return MapsFileContents(
            maps=torch.stack([segment.maps.float().cpu() for segment in self.segments]),
            images=torch.stack([to_uint16(image[0].cpu()) for image in self.images]),
            losses=torch.tensor([segment.losses for segment in self.segments], dtype=torch.float32),
            config=self.config, loop=self.loop, source_sizes=tuple(self.source_sizes),
            fit_seconds=tuple(segment.fit_seconds for segment in self.segments),
            starts=tuple(segment.start or StartRecord(self.config.align) for segment in self.segments))

    @classmethod
    def load(cls, path: str | Path) -> MorphResult:
        """Read a maps file written by :meth:`save` or ``diffmorph morph`` (any version this diffmorph reads)."""
        contents = read_maps_file(path)
        starts = contents.starts or (StartRecord(contents.config.align, line=NOT_RECORDED),) * len(contents.fit_seconds)
        segments = [Segment(maps=maps, losses=losses.tolist(), fit_seconds=seconds, start=start)
                    for maps, losses, seconds, start
                    in zip(contents.maps, contents.losses, contents.fit_seconds, starts, strict=True)]
        return cls(images=[from_uint16(image).unsqueeze(0) for image in contents.images], segments=segments,
                   config=contents.config, loop=contents.loop, source_sizes=list(contents.source_sizes))


def configured(config: MorphConfig | None, overrides: dict[str, object]) -> MorphConfig:
    """``config`` (defaults when None) with ``overrides`` applied, validated.

    Raises:
        ConfigError: an unknown field or a value out of range.
    """
    if config is not None and not isinstance(config, MorphConfig):
        raise ConfigError(f"config must be a MorphConfig, got {type(config).__name__}; give the images as one list: "
                          f"morph([a, b])")
    try:
        return replace(config or MorphConfig(), **overrides).validate()
    except TypeError as exc:
        raise ConfigError(f"unknown setting: {exc}") from None


def image_labels(count: int) -> list[str]:
    """How messages name each of ``count`` images: A and B for a pair, image 1, image 2, ... for a chain."""
    return ["A", "B"] if count == 2 else [f"image {i + 1}" for i in range(count)]


def prepare_images(sources: Sequence[ImageSource], config: MorphConfig, *, max_pixels: int = DEFAULT_MAX_PIXELS
                   ) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Decode images and fit every one after the first to the first one's frame.

    Returns:
        The images as ``(1, 3, H, W)`` tensors in ``[-1, 1]`` at the first one's size, and each one's own
        ``(width, height)`` as decoded.
    """
    decoded = [load_image(source, background=config.background, max_pixels=max_pixels, label=label)
               for source, label in zip(sources, image_labels(len(sources)), strict=True)]
    height, width = decoded[0].shape[:2]
    fitted = [decoded[0]] + [fit_to_frame(image, width, height, config.fit, config.background)[0]
                             for image in decoded[1:]]
    return [to_tensor(image) for image in fitted], [(image.shape[1], image.shape[0]) for image in decoded]


def morph(images: Sequence[ImageSource], config: MorphConfig | None = None, *, loop: bool = False,
          progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, batch: bool | None = None,
          params: Params = Params(), plan: Plan | None = None, masks: Sequence[ImageSource | None] | None = None,
          mask_mode: str = "keep", points: PointsSource | Sequence[PointsSource] | None = None,
          **overrides: object) -> MorphResult:
    """Fit the maps that morph each image into the next.

    Args:
        images: two or more paths, PIL images or arrays (see :func:`diffmorph.io.images.load_image`). The
            morph has the first one's size; the others are fitted to its frame by ``config.fit``.
        config: settings; defaults when omitted.
        loop: add a segment from the last image back to the first.
        progress: optional ``progress(steps_done, loss)`` callback, the steps of every segment counted
            (:attr:`Plan.fit_steps` in all).
        max_pixels: refuse larger inputs.
        batch: fit segments side by side (True), one after another (False), or by device (None: side by
            side on CUDA, where one fit leaves the device idle).
        params: the heuristics' tuned numbers.
        plan: the run's plan (:func:`~diffmorph.plan.make_plan`), made by a caller that reads from it too; it
            replaces ``config``, ``loop`` and ``overrides``.
        masks: optional guidance, one per image (or None for an image without one): a picture of the image's
            size whose white part is a region (see :mod:`diffmorph.start.masks`).
        mask_mode: what the regions are: "keep" (they stay still and crossfade) or "subject" (they correspond;
            the rest crossfades unwarped).
        points: optional point hints, per segment (one for a pair): an ``(N, 4)`` array of ``ax, ay, bx, by``
            in each image's own pixels, or a CSV file of them (see :mod:`diffmorph.start.points`), or None;
            the warp carries each point on A onto its partner on B.
        **overrides: config fields to change, e.g. ``steps=300``.

    Returns:
        A :class:`MorphResult`.

    Example::

        result = diffmorph.morph(["cat.jpg", "dog.jpg"], steps=500)
        frames = list(diffmorph.render(result, frames=30))
    """
    if isinstance(images, str | Path) or len(images) < 2:
        count = 1 if isinstance(images, str | Path) else len(images)
        raise ConfigError(f"a morph needs at least 2 images, got {count}; give them as one list")
    if plan is None:
        plan = make_plan(configured(config, overrides), len(images), loop=loop, fit=params.fit)
    elif config is not None or overrides or loop:
        raise ConfigError("give either a plan or a config, its overrides and loop, not both")
    elif plan.images != len(images):
        raise ConfigError(f"the plan is for {plan.images} images, got {len(images)}")
    plan, config = plan.resolved(), plan.config
    if masks is not None and (isinstance(masks, str | Path) or len(masks) != len(images)):
        raise ConfigError(f"give one mask (or None) per image: {len(images)} images")
    if mask_mode not in MASK_MODES:
        raise ConfigError(f"unknown mask mode {mask_mode!r}; choose keep or subject")
    given_points = _point_values(points, plan.segments)  # a malformed file is told before any image is read
    started = CpuTimes.now()  # the machine's load is watched while the images are read
    ends = _ends(len(images), plan.loop)  # the images each segment morphs between
    # The request is refused before any image is decoded or fitted, where the files' headers tell their sizes.
    known = [header_size(image) for image in images]
    if known[0] is not None:
        plan.check_size(*known[0])
    if None not in known:
        hints = _hints(given_points, ends, known, config.fit)
    tensors, sizes = prepare_images(images, config, max_pixels=max_pixels)
    if known[0] != sizes[0]:
        plan.check_size(*sizes[0])
    if known != sizes:  # arrays, or a header that said otherwise: checked against the decoded sizes
        hints = _hints(given_points, ends, sizes, config.fit)
    regions = None
    if masks is not None and any(mask is not None for mask in masks):
        regions = load_masks(masks, sizes, config.fit, image_labels(len(images)))
    pairs = [(tensors[i], tensors[j]) for i, j in ends]
    at_once = _segments_at_once(plan.device, config, len(pairs)) if batch is None else (len(pairs) if batch else 1)
    per_segment = plan.fit_steps // plan.segments
    segments = []
    with using_threads(config.threads, since=started, params=params.threads):
        found = time.perf_counter()
        starts = find_starts(pairs, config, params.start)  # before any fit: what each warp starts from
        starts = [start if pins is None else hinted(start, pins, config.warp_scale, params.hints)
                  for start, pins in zip(starts, hints, strict=True)]
        if regions is not None:
            starts = [masked(start, regions[i], regions[j], mask_mode)
                      for start, (i, j) in zip(starts, ends, strict=True)]
        finding = (time.perf_counter() - found) / len(pairs)  # each segment's share, counted in its fit's time
        for first in range(0, len(pairs), at_once):
            chunk = pairs[first:first + at_once]

            def report(done: int, loss: float, offset: int = first * per_segment) -> None:
                if progress is not None:
                    progress(offset + done, loss)

            fits = fit_batch(chunk, config, plan.device, progress=report, params=params.fit,
                             starts=starts[first:first + at_once], hints=hints[first:first + at_once])
            segments += [Segment(maps=fit.maps, losses=fit.losses, fit_seconds=fit.seconds / len(chunk) + finding,
                                 start=fit.start) for fit in fits]
    return MorphResult(images=tensors, segments=segments, config=config, loop=plan.loop, source_sizes=sizes)


def _ends(images: int, loop: bool) -> list[tuple[int, int]]:
    """The images each segment morphs between, in order."""
    return list(itertools.pairwise(range(images))) + ([(images - 1, 0)] if loop else [])


def _point_values(points: PointsSource | Sequence[PointsSource] | None, segments: int
                  ) -> list[tuple[np.ndarray, str] | None]:
    """Each segment's point hints as given (files read) with how messages name them, or None; the count checked."""
    if points is None:
        return [None] * segments
    if isinstance(points, str | Path) or (isinstance(points, np.ndarray) and points.ndim == 2):
        points = [points]
    if len(points) != segments:
        raise ConfigError(f"give point hints for each of the {segments} segment(s) (None for a segment without), "
                          f"got {len(points)}")
    values: list[tuple[np.ndarray, str] | None] = []
    for index, given in enumerate(points):
        if given is None:
            values.append(None)
        elif isinstance(given, str | Path):
            values.append((read_points(given), f"points file {given}"))
        else:
            values.append((given, "points" if segments == 1 else f"points of segment {index + 1}"))
    return values


def _hints(given: list[tuple[np.ndarray, str] | None], ends: list[tuple[int, int]], sizes: list[tuple[int, int]],
           fit: str) -> list[torch.Tensor | None]:
    """Each segment's point hints in the frame's fractions (see :func:`~diffmorph.start.points.in_frame`)."""
    framings = [Framing(fit, size, sizes[0]) for size in sizes]
    return [None if pins is None else in_frame(pins[0], framings[i], framings[j], pins[1])
            for pins, (i, j) in zip(given, ends, strict=True)]


def _segments_at_once(device: torch.device, config: MorphConfig, segments: int) -> int:
    """How many segments to fit side by side: 1 off CUDA, else as many as half the free memory holds."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    # A fit's tensors at the default 128 working size add up to about 20 MB (activations, gradients, Adam
    # state, warps); 64 MB leaves room for workspaces.
    per_segment = 64 * 2**20 * max(1.0, (config.size / 128) ** 2)
    return max(1, min(segments, int(free / 2 // per_segment)))


def render(result: MorphResult, *, frames: int | None = None, pingpong: bool = False,
           device: str | torch.device | None = None, params: Params = Params()) -> Iterator[np.ndarray]:
    """Yield the morph's frames as ``(H, W, 3)`` uint8 arrays at its :attr:`~MorphResult.size`, the first image
    first; a held frame repeats the one before it.

    The config's ``ease``, ``hold`` and ``pacing`` set the timing, its ``mode`` how frames are made. On a CPU the
    frames are made on as many threads as PyTorch has, with PyTorch set to one thread each until the last frame
    is taken (see :func:`~diffmorph.threads.frame_map`).

    Args:
        frames: frames per segment, both ends included (by default the config's ``frames``, or its
            ``durations``); at least 2.
        pingpong: play forward, then backward.
    """
    plan = result.plan({"frames": frames}, pingpong=pingpong, device=device, params=params)
    return (frame for _, _, frame in timed_frames(result, plan, params=params))


def timed_frames(result: MorphResult, plan: Plan, *, params: Params = Params(),
                 renderers: dict[int, Renderer] | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Every output frame of ``plan``'s timeline as ``(segment, t, frame)``, rendered with its settings.

    Args:
        renderers: where to keep each segment's renderer for the caller (its stills reuse them); by default
            only the current segment's full-size renderer is held.
    """
    result, plan = replace(result, config=plan.config), plan.resolved()
    counts = plan.frame_counts
    kept = {} if renderers is None else renderers
    with frame_map(plan.device, most=plan.frames_at_once(*result.size)) as mapper:
        for segment, run in itertools.groupby(plan.timeline, key=lambda shown: shown[0]):
            if segment not in kept:
                if renderers is None:
                    kept.clear()  # one segment's full-size maps in memory at a time
                kept[segment] = result.renderer(segment, plan.device, frames=counts[segment], params=params)
            renderer = kept[segment]
            renderer.measure_pace(mapper)
            times = [t for _, t in run]
            shown = [t for t, _ in itertools.groupby(times)]  # a held frame is rendered once
            rendered = mapper(lambda t, renderer=renderer: to_uint8(renderer.frame(t)), shown)
            for (t, held), frame in zip(itertools.groupby(times), rendered, strict=True):
                for _ in held:
                    yield segment, t, frame


def load_maps(path: str | Path) -> MorphResult:
    """Read a maps file; same as ``MorphResult.load(path)``."""
    return MorphResult.load(path)
