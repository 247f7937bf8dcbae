"""Chains of images: one continuous morph through every image in order, optionally looping.

A sequence is a list of pair morphs ("segments") that share their keyframes: segment ``k`` morphs
image ``k`` into image ``k + 1``; with ``loop`` a last segment morphs the last image back into the
first. Every image is fitted to the first image's frame, as ``morph`` fits B to A's.

Timeline of the output (``frames`` per segment, both keyframes included):

- each segment contributes its ``frames`` eased frames, except that a segment's first frame is
  dropped after the first segment (it is the previous segment's last frame): keyframes are shown
  exactly once;
- ``hold`` repeats every keyframe for ``round(hold * fps)`` more frames;
- ``pingpong`` plays the whole timeline forward, then backward back to the first frame.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from diffmorph._version import __version__
from diffmorph.api import MorphResult, configured, prepare_images, resolve_device
from diffmorph.config import MorphConfig
from diffmorph.errors import ConfigError, MapsFileError
from diffmorph.export import (
    DEFAULT_FORMATS,
    MAPS_FILE,
    FrameCallback,
    check_formats,
    render_config,
    write_animations,
    write_flows,
)
from diffmorph.io.images import (
    DEFAULT_MAX_PIXELS,
    Framing,
    ImageSource,
    from_uint16,
    to_uint16,
)
from diffmorph.io.mapsfile import save_safetensors
from diffmorph.io.outputs import OutputFolder
from diffmorph.io.pictures import contact_sheet
from diffmorph.io.writers import OUTPUT_NAMES
from diffmorph.optimize import ProgressCallback, fit_batch
from diffmorph.renderer import ease, frame_times, to_uint8

SEQUENCE_FORMAT = "diffmorph.sequence"
SEQUENCE_VERSION = 1


@dataclass
class SequenceResult:
    """A fitted chain.

    Attributes:
        segments: one :class:`~diffmorph.api.MorphResult` per consecutive pair, in order.
        loop: whether the last segment morphs the last image back into the first.
    """

    segments: list[MorphResult]
    loop: bool = False
    framings: list[Framing] = field(default_factory=list)  # how images 2, 3, ... were fitted to the first

    @property
    def config(self) -> MorphConfig:
        return self.segments[0].config

    @property
    def size(self) -> tuple[int, int]:
        return self.segments[0].size

    def keyframes(self) -> list[torch.Tensor]:
        """The input images, ``(1, 3, H, W)`` each, in order (the first again at the end for a loop)."""
        return [segment.image_a for segment in self.segments] + [self.segments[-1].image_b]

    def save(self, path: str | Path) -> None:
        """Write one maps file holding every segment (see :func:`read_sequence`)."""
        from diffmorph.io.outputs import replacing

        with replacing(path) as temp:
            write_sequence(temp, self)

    @classmethod
    def load(cls, path: str | Path) -> SequenceResult:
        return read_sequence(path)


def morph_sequence(images: Sequence[ImageSource], config: MorphConfig | None = None, *, loop: bool = False,
                   progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                   batch: bool | None = None, **overrides: object) -> SequenceResult:
    """Fit every segment of a chain.

    Segments are independent, so on a GPU they fit side by side in one pass (as many at once as its
    free memory allows); on a CPU, where one fit already keeps the cores busy, one after another.

    Args:
        images: two or more paths, PIL images or arrays; all are fitted to the first one's frame.
        loop: add a segment from the last image back to the first.
        progress: ``progress(steps_done, loss)`` over all segments together.
        batch: fit segments side by side (True), one after another (False), or by device (None).
        **overrides: config fields to change.
    """
    if len(images) < 2:
        raise ConfigError(f"a morph needs at least 2 images, got {len(images)}")
    config = configured(config, overrides)
    device = resolve_device(config.device)
    tensors, framings = prepare_images(list(images), [f"image {i + 1}" for i in range(len(images))], config,
                                       max_pixels=max_pixels)
    pairs = list(itertools.pairwise(tensors)) + ([(tensors[-1], tensors[0])] if loop else [])
    at_once = _segments_at_once(device, config, len(pairs)) if batch is None else (len(pairs) if batch else 1)
    segments = []
    for start in range(0, len(pairs), at_once):
        chunk = pairs[start:start + at_once]

        def report(done: int, loss: float, offset: int = start * config.steps) -> None:
            if progress is not None:
                progress(offset + done, loss)

        fits = fit_batch(chunk, config, device, progress=report)
        segments += [MorphResult(maps=fit.maps, image_a=a, image_b=b, config=config, losses=fit.losses,
                                 fit_seconds=fit.seconds / len(chunk), alignment=fit.alignment,
                                 bent=fit.bent, subject=fit.subject)
                     for fit, (a, b) in zip(fits, chunk, strict=True)]
    return SequenceResult(segments=segments, loop=loop, framings=framings)


def _segments_at_once(device: torch.device, config: MorphConfig, segments: int) -> int:
    """How many segments to fit side by side: 1 off CUDA, else as many as half the free memory holds."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    # A fit's tensors at the default 128 working size add up to about 20 MB (activations, gradients, Adam
    # state, warps); 64 MB leaves room for workspaces. Not measured on a GPU: none was at hand.
    per_segment = 64 * 2**20 * max(1.0, (config.size / 128) ** 2)
    return max(1, min(segments, int(free / 2 // per_segment)))


def sequence_timeline(segments: int, config: MorphConfig, *, pingpong: bool = False) -> list[tuple[int, float]]:
    """Every output frame as ``(segment, t)``.

    >>> sequence_timeline(2, MorphConfig(frames=3))
    [(0, 0.0), (0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]
    """
    held = round(config.hold * config.fps)
    times: list[tuple[int, float]] = [(0, 0.0)] * held
    for segment, count in enumerate(config.segment_frames(segments)):
        eased = [(segment, ease(t, config.ease)) for t in frame_times(count)]
        times += eased if segment == 0 else eased[1:]
        times += [(segment, 1.0)] * held
    if pingpong:
        times += times[-2::-1]
    return times


def render_sequence(result: SequenceResult, *, pingpong: bool = False, device: str | torch.device | None = None
                    ) -> Iterator[np.ndarray]:
    """Yield the chain's frames as ``(H, W, 3)`` uint8 arrays; a held frame repeats the one before it."""
    renderers: dict[int, object] = {}
    counts = result.config.segment_frames(len(result.segments))
    shown, frame = None, None
    for segment, t in sequence_timeline(len(result.segments), result.config, pingpong=pingpong):
        if (segment, t) != shown:
            if segment not in renderers:
                renderers.clear()  # one segment's full-resolution maps in memory at a time
                renderers[segment] = result.segments[segment].renderer(device, frames=counts[segment])
            shown, frame = (segment, t), to_uint8(renderers[segment].frame(t))
        yield frame


def sequence_output_names(formats: Sequence[str], segments: int) -> list[str]:
    """Every name :func:`export_sequence` writes."""
    names = [OUTPUT_NAMES[kind] for kind in formats if kind in OUTPUT_NAMES]
    if "flow" in formats:
        names += [f"flow_{k + 1:02d}_{d}.{ext}" for k in range(segments) for d in ("a_to_b", "b_to_a")
                  for ext in ("npy", "flo", "png")]
    return [*names, MAPS_FILE, "contact_sheet.png", "config.json"]


def export_sequence(result: SequenceResult, folder: str | Path, *, formats: Sequence[str] = DEFAULT_FORMATS,
                    pingpong: bool = False, device: str | torch.device | None = None,
                    on_frame: FrameCallback | None = None, **render_settings: object) -> list[Path]:
    """Render a chain and write its outputs into ``folder``, all or nothing.

    Writes the animations in ``formats``, ``maps.safetensors`` (every segment), ``contact_sheet.png``
    (the keyframes), ``config.json`` and, with "flow", ``flow_NN_a_to_b.*`` / ``flow_NN_b_to_a.*`` per
    segment ``NN`` (from 01).

    Args:
        render_settings: config fields to change for rendering, as for :func:`diffmorph.export.export`.

    Returns:
        The paths written.
    """
    formats = check_formats(formats)
    config = render_config(result.config, render_settings)
    result = SequenceResult(segments=[replace(s, config=config) for s in result.segments], loop=result.loop)
    width, height = result.size
    target = resolve_device(device) if isinstance(device, str) else device
    started = time.perf_counter()
    with OutputFolder(folder, sequence_output_names(formats, len(result.segments))) as out:
        keyframes = [to_uint8(frame) for frame in result.keyframes()]
        write_animations(out, formats, render_sequence(result, pingpong=pingpong, device=target), width, height,
                         config, on_frame, keyframes)
        labelled = [(f"image {i + 1}", frame) for i, frame in enumerate(keyframes)]
        contact_sheet(labelled[:-1] if result.loop else labelled).save(out.temp("contact_sheet.png"), format="PNG")
        if "flow" in formats:
            for index, segment in enumerate(result.segments):
                write_flows(out, segment.renderer(target), f"flow_{index + 1:02d}")
        write_sequence(out.temp(MAPS_FILE), result)
        summary = {"diffmorph_version": __version__, "config": config.to_dict(), "size": {"width": width,
                   "height": height}, "segments": len(result.segments), "loop": result.loop, "pingpong": pingpong,
                   "frames_written": len(sequence_timeline(len(result.segments), config, pingpong=pingpong)),
                   "fit_seconds": [segment.fit_seconds for segment in result.segments],
                   "seconds": {"export": time.perf_counter() - started}}
        out.temp("config.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out.written


def write_sequence(path: Path, result: SequenceResult) -> None:
    """Write a sequence maps file.

    Tensors: ``maps`` float32 ``(S, 16, h, w)``; ``images`` uint16 ``(K, 3, H, W)``, the keyframes in
    order without the repeated first one of a loop (level ``v`` means ``v / 32767.5 - 1``);
    ``losses`` float32 ``(S, steps)``. Metadata: ``format`` = ``"diffmorph.sequence"``,
    ``format_version`` = ``"1"``, ``diffmorph_version``, ``config`` (JSON), ``loop`` (``"true"``/``"false"``).
    """
    keyframes = result.keyframes()[:-1] if result.loop else result.keyframes()
    tensors = {
        "maps": torch.stack([segment.maps.float().cpu() for segment in result.segments]).contiguous(),
        "images": torch.stack([to_uint16(frame[0].cpu()) for frame in keyframes]).contiguous(),
        "losses": torch.tensor([segment.losses for segment in result.segments], dtype=torch.float32),
    }
    metadata = {"format": SEQUENCE_FORMAT, "format_version": str(SEQUENCE_VERSION), "diffmorph_version": __version__,
                "config": json.dumps(result.config.to_dict()), "loop": "true" if result.loop else "false"}
    save_safetensors(path, tensors, metadata)


def read_sequence(path: str | Path) -> SequenceResult:
    """Read a sequence maps file.

    Raises:
        MapsFileError: missing, corrupt, not a sequence file, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise MapsFileError(f"maps file {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != SEQUENCE_FORMAT:
                raise MapsFileError(f"{path} is not a diffmorph sequence maps file")
            if metadata.get("format_version") != str(SEQUENCE_VERSION):
                raise MapsFileError(f"maps file {path} has format version {metadata.get('format_version')}; this "
                                    f"diffmorph reads version {SEQUENCE_VERSION}: re-run diffmorph morph")
            maps, images, losses = (handle.get_tensor(name) for name in ("maps", "images", "losses"))
        config = MorphConfig.from_dict(json.loads(metadata["config"])).validate()
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise MapsFileError(f"maps file {path} is corrupt ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    loop = metadata.get("loop") == "true"
    frames = [from_uint16(image).unsqueeze(0) for image in images]
    if loop:
        frames.append(frames[0])
    if maps.dim() != 4 or maps.shape[1] != 16 or len(frames) != maps.shape[0] + 1:
        raise MapsFileError(f"maps file {path} is corrupt: {maps.shape[0]} segments for {images.shape[0]} images")
    segments = [MorphResult(maps=maps[k], image_a=frames[k], image_b=frames[k + 1], config=config,
                            losses=losses[k].tolist()) for k in range(maps.shape[0])]
    return SequenceResult(segments=segments, loop=loop)


def is_sequence_file(path: str | Path) -> bool:
    """Whether ``path`` is a sequence maps file (False for pair maps files and unreadable files)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == SEQUENCE_FORMAT
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False

