"""Writing a morph's outputs: videos, stills, the maps file and the config, all or nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffmorph._version import __version__
from diffmorph.allocator import release_freed_memory
from diffmorph.budget import check_request
from diffmorph.config import DEFAULT_FORMATS, RENDER_SETTINGS, MorphConfig
from diffmorph.errors import ConfigError
from diffmorph.io.flow import forward_flows, write_flo, write_npy
from diffmorph.io.mapsfile import write_maps_file
from diffmorph.io.outputs import EXPORT_FORMATS, MAPS_FILE, OutputFolder, output_names
from diffmorph.io.pictures import contact_sheet, flow_to_rgb, maps_picture
from diffmorph.io.writers import FORMATS, OUTPUT_NAMES, FrameWriter, WriterOptions, clip_palette, even_size, open_writer
from diffmorph.ops import resize
from diffmorph.optimize import scales_of
from diffmorph.params import Params
from diffmorph.pipeline import MorphResult, resolve_device, timed_frames
from diffmorph.render import Renderer, ease, fidelity, timeline, to_uint8
from diffmorph.threads import using_threads

CONTACT_SHEET_FRAMES = 5

FrameCallback = Callable[[int], None]
"""Called as ``on_frame(frames_done)`` while rendering."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export` wrote and measured.

    Attributes:
        files: the paths written.
        frames: frames in each animation.
        fps: their rate.
        fidelity: per segment, PSNR in dB of A fully mapped to B (``a_to_b_psnr``) and of B mapped to A.
        notes: lines worth telling the user (a dropped odd row, GIF's rate limit).
        seconds: ``render_and_encode`` (the frame loop) and ``export`` (everything).
    """

    files: list[Path]
    frames: int
    fps: float
    fidelity: list[dict[str, float]]
    notes: list[str]
    seconds: dict[str, float]


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Validate and de-duplicate ``formats``, keeping their order."""
    unknown = [kind for kind in formats if kind not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"unknown format {unknown[0]!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if not formats:
        raise ConfigError(f"give at least one format from {', '.join(EXPORT_FORMATS)}")
    return tuple(dict.fromkeys(formats))


def render_config(config: MorphConfig, settings: dict[str, object]) -> MorphConfig:
    """``config`` with the render settings that are not None changed, validated.

    Raises:
        ConfigError: a name that is not a render setting, or a value out of range.
    """
    unknown = sorted(set(settings) - set(RENDER_SETTINGS))
    if unknown:
        raise ConfigError(f"not a render setting: {', '.join(unknown)}")
    changes = {k: v for k, v in settings.items() if v is not None}
    if "frames" in changes and "durations" not in changes:
        changes["durations"] = ()  # frames asked for now replace durations stored with the fit
    return replace(config, **changes).validate()


def frame_count(config: MorphConfig, segments: int, pingpong: bool = False) -> int:
    """How many frames each animation of a morph of ``segments`` segments holds under ``config``."""
    counts = config.segment_frames(segments)
    return len(timeline(counts, config.fps, config.ease, config.hold, pingpong=pingpong))


def export(result: MorphResult, folder: str | Path, *, formats: Sequence[str] = DEFAULT_FORMATS,
           pingpong: bool = False, device: str | torch.device | None = None, on_frame: FrameCallback | None = None,
           params: Params = Params(), **render_settings: object) -> ExportReport:
    """Render ``result`` and write every output into ``folder``, all or nothing.

    Writes the animations in ``formats`` (``morph.mp4``, ``morph.gif``, ``morph.webp``, ``frames/``);
    ``maps.safetensors``; ``contact_sheet.png`` (a pair's frames at t = 0, 0.25 ... 1, a chain's images);
    ``config.json``; for a pair ``a_to_b.png`` and ``b_to_a.png`` (the maps fully applied) and ``maps.png``;
    with "flow" the correspondence of each direction of each segment (:func:`flow_names`; layout in
    :mod:`diffmorph.io.flow`). Frames stream to every writer as they are rendered; files appear only when
    all are complete.

    Args:
        formats: any of :data:`EXPORT_FORMATS`.
        pingpong: play forward, then backward.
        device: where to render (the config's device by default).
        on_frame: optional progress callback.
        params: the heuristics' tuned numbers.
        render_settings: config fields to change for rendering, any of
            :data:`~diffmorph.config.RENDER_SETTINGS`; None keeps the config's value. They are recorded in
            ``config.json`` and the maps file.

    Raises:
        ConfigError, OutputError: bad settings or an unwritable folder, before anything is written.
    """
    formats = check_formats(formats)
    config = render_config(result.config, render_settings)
    result = replace(result, config=config)
    segments = len(result.segments)
    check_request(config, segments, result.images[0].shape[-1], result.images[0].shape[-2], pingpong=pingpong)
    width, height = result.size
    target = resolve_device(device) if isinstance(device, str) else device
    notes = []
    if "mp4" in formats and even_size(width, height) != (width, height):
        even_w, even_h = even_size(width, height)
        notes.append(f"morph.mp4 is {even_w} x {even_h}: H.264 in yuv420p needs even sizes, so the last "
                     f"odd row or column is dropped")
    if "gif" in formats and config.fps > 50:
        notes.append("morph.gif plays at 50 frames/s: GIF cannot time frames faster")

    started = time.perf_counter()
    with (using_threads(config.threads, params=params.threads),
          OutputFolder(folder, output_names(formats, segments)) as out):
        # 1. Animations: render each frame once and hand it to every writer. A pair's contact sheet takes
        #    the frames rendered nearest its times.
        renderers: dict[int, Renderer] | None = {} if segments == 1 else None
        sheet_times = {ease(k / (CONTACT_SHEET_FRAMES - 1), config.ease) for k in range(CONTACT_SHEET_FRAMES)}
        sheet: dict[float, tuple[float, np.ndarray]] = {}  # wanted time -> the nearest frame rendered

        def frames() -> Iterable[np.ndarray]:
            for _, t, frame in timed_frames(result, pingpong=pingpong, device=target, params=params,
                                            renderers=renderers):
                nearest = min(sheet_times, key=lambda wanted: abs(wanted - t))
                if nearest not in sheet or abs(nearest - t) < abs(nearest - sheet[nearest][0]):
                    sheet[nearest] = (t, frame)
                yield frame

        images = [to_uint8(resize(image, height, width, antialias=True).clamp(-1.0, 1.0)) for image in result.images]
        written = write_animations(out, formats, frames(), width, height, config, on_frame, images)
        frames_seconds = time.perf_counter() - started
        release_freed_memory()  # the frames' buffers, kept for each next frame, are not needed by what follows

        # 2. Stills, flows and the maps file.
        if segments == 1:
            labelled = [(f"t = {t:.2f}", frame) for t, frame in (sheet[wanted] for wanted in sorted(sheet))]
        else:
            labelled = [(f"image {i + 1}", frame) for i, frame in enumerate(images)]
        contact_sheet(labelled).save(out.temp("contact_sheet.png"), format="PNG")
        fidelities = []
        for index in range(segments):
            renderer = renderers[0] if renderers else result.renderer(index, target, params=params)
            fidelities.append(fidelity(renderer))
            if segments == 1:
                mapped = renderer.fully_mapped()
                Image.fromarray(to_uint8(mapped[0:1])).save(out.temp("a_to_b.png"), format="PNG")
                Image.fromarray(to_uint8(mapped[1:2])).save(out.temp("b_to_a.png"), format="PNG")
                maps_picture(result.segments[0].maps, width, height, scales_of(config)).save(
                    out.temp("maps.png"), format="PNG")
            if "flow" in formats:
                prefix = "flow" if segments == 1 else f"flow_{index + 1:02d}"
                write_flows(out, forward_flows(result.segments[index].maps, config.warp_scale, height, width), prefix)
        write_maps_file(out.temp(MAPS_FILE), result.contents(), __version__)
        seconds = {"render_and_encode": frames_seconds, "export": time.perf_counter() - started}
        summary = _summary(result, fidelities, formats, pingpong, written, seconds)
        summary["outputs"] = output_names(formats, segments)  # what is diffmorph's here (see io.outputs)
        out.temp("config.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ExportReport(files=out.written, frames=written, fps=config.fps, fidelity=fidelities, notes=notes,
                        seconds=seconds)


def write_animations(out: OutputFolder, formats: Sequence[str], frames: Iterable[np.ndarray], width: int,
                     height: int, config: MorphConfig, on_frame: FrameCallback | None,
                     keyframes: Sequence[np.ndarray]) -> int:
    """Stream ``frames`` to a writer per animation format in ``formats``, under ``out``'s temporary names.

    Args:
        keyframes: the images the morph passes through, in order, for the GIF's clip palette.

    Returns:
        The number of frames written. The stack closes every writer even when rendering or another writer fails.
    """
    palette = clip_palette(keyframes) if "gif" in formats and config.gif_palette == "clip" else None
    options = WriterOptions(width, height, config.fps, gif_width=config.gif_width, gif_palette=palette,
                            gif_smooth=config.gif_palette == "smooth")
    count = 0
    with ExitStack() as closing:
        writers: list[FrameWriter] = []
        for kind in (kind for kind in formats if kind in FORMATS):
            writer = open_writer(kind, out.temp(OUTPUT_NAMES[kind]), options)
            closing.callback(writer.close)
            writers.append(writer)
        for frame in frames:
            for writer in writers:
                writer.add(frame)
            count += 1
            if on_frame is not None:
                on_frame(count)
    return count


def write_flows(out: OutputFolder, flows: dict[str, np.ndarray], prefix: str) -> None:
    """``{prefix}_a_to_b.npy``, ``.flo``, ``.png`` and the same for ``b_to_a`` (see :mod:`diffmorph.io.flow`)."""
    for direction, flow in flows.items():
        write_npy(out.temp(f"{prefix}_{direction}.npy"), flow)
        write_flo(out.temp(f"{prefix}_{direction}.flo"), flow)
        picture = flow_to_rgb(flow.transpose(2, 0, 1)[::-1])  # flow_to_rgb takes (dy, dx) first
        Image.fromarray(picture).save(out.temp(f"{prefix}_{direction}.png"), format="PNG")


def _summary(result: MorphResult, fidelities: list[dict[str, float]], formats: Sequence[str], pingpong: bool,
             frames: int, seconds: dict[str, float]) -> dict:
    width, height = result.size
    return {
        "diffmorph_version": __version__,
        "config": result.config.to_dict(),
        "size": {"width": width, "height": height},
        "images": len(result.images),
        "segments": len(result.segments),
        "loop": result.loop,
        "pingpong": pingpong,
        "source_sizes": [list(size) for size in result.source_sizes],
        "framings": [framing.describe(f"image {i + 2}", "image 1") for i, framing in enumerate(result.framings)],
        "formats": list(formats),
        "frames_written": frames,
        "fit": [{"steps": len(segment.losses), "final_loss": segment.losses[-1] if segment.losses else None,
                 "seconds": segment.fit_seconds,
                 "start": segment.describe_start(result.config.align)} for segment in result.segments],
        "seconds": seconds,
        "fidelity_db": fidelities,
    }
