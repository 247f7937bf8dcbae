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
from diffmorph.config import DEFAULT_FORMATS, MorphConfig
from diffmorph.errors import ConfigError
from diffmorph.io.flow import forward_flows, write_flo, write_npy
from diffmorph.io.mapsfile import write_maps_file
from diffmorph.io.outputs import MAPS_FILE, OutputFolder
from diffmorph.io.pictures import contact_sheet, flow_to_rgb, maps_picture
from diffmorph.io.writers import FORMATS, OUTPUT_NAMES, FrameWriter, WriterOptions, clip_palette, even_size, open_writer
from diffmorph.ops import resize, scales_of
from diffmorph.params import Params
from diffmorph.pipeline import MorphResult, timed_frames
from diffmorph.plan import Plan
from diffmorph.render import Renderer, ease, fidelity, to_uint8
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


def export(result: MorphResult, folder: str | Path, *, formats: Sequence[str] | None = None,
           pingpong: bool | None = None, device: str | torch.device | None = None,
           on_frame: FrameCallback | None = None, params: Params = Params(), plan: Plan | None = None,
           **render_settings: object) -> ExportReport:
    """Render ``result`` and write every output into ``folder``, all or nothing.

    Writes the animations in ``formats`` (``morph.mp4``, ``morph.gif``, ``morph.webp``, ``frames/``);
    ``maps.safetensors``; ``contact_sheet.png`` (a pair's frames at t = 0, 0.25 ... 1, a chain's images);
    ``config.json``; for a pair ``a_to_b.png`` and ``b_to_a.png`` (the maps fully applied) and ``maps.png``;
    with "flow" the correspondence of each direction of each segment (:func:`flow_names`; layout in
    :mod:`diffmorph.io.flow`). Frames stream to every writer as they are rendered; files appear only when
    all are complete.

    Args:
        formats: any of :data:`EXPORT_FORMATS` (by default :data:`~diffmorph.config.DEFAULT_FORMATS`).
        pingpong: play forward, then backward.
        device: where to render (the config's device by default).
        on_frame: optional progress callback (:attr:`Plan.frames` in all).
        params: the heuristics' tuned numbers.
        plan: the run's plan (:meth:`MorphResult.plan`), made by a caller that reads from it too; it replaces
            ``formats``, ``pingpong``, ``device`` and ``render_settings``.
        render_settings: config fields to change for rendering, any of
            :data:`~diffmorph.config.RENDER_SETTINGS`; None keeps the config's value. They are recorded in
            ``config.json`` and the maps file.

    Raises:
        ConfigError, OutputError: bad settings or an unwritable folder, before anything is written.
    """
    if plan is None:
        plan = result.plan(render_settings, formats=DEFAULT_FORMATS if formats is None else formats,
                           pingpong=bool(pingpong), device=device, params=params)
    elif formats is not None or pingpong is not None or device is not None or render_settings:
        raise ConfigError("give either a plan or formats, pingpong, device and render settings, not both")
    elif plan.segments != len(result.segments):
        raise ConfigError(f"the plan is for {plan.segments} segments, the morph has {len(result.segments)}")
    plan = plan.resolved()
    config, formats, segments = plan.config, plan.formats, plan.segments
    result = replace(result, config=config)
    plan.check_size(result.images[0].shape[-1], result.images[0].shape[-2])
    width, height = result.size
    notes = []
    if "mp4" in formats and even_size(width, height) != (width, height):
        even_w, even_h = even_size(width, height)
        notes.append(f"morph.mp4 is {even_w} x {even_h}: H.264 in yuv420p needs even sizes, so the last "
                     f"odd row or column is dropped")
    if "gif" in formats and config.fps > 50:
        notes.append("morph.gif plays at 50 frames/s: GIF cannot time frames faster")

    started = time.perf_counter()
    with (using_threads(config.threads, params=params.threads),
          OutputFolder(folder, plan.outputs) as out):
        # 1. Animations: render each frame once and hand it to every writer. A pair's contact sheet takes
        #    the frames rendered nearest its times.
        renderers: dict[int, Renderer] | None = {} if segments == 1 else None
        sheet_times = {ease(k / (CONTACT_SHEET_FRAMES - 1), config.ease) for k in range(CONTACT_SHEET_FRAMES)}
        sheet: dict[float, tuple[float, np.ndarray]] = {}  # wanted time -> the nearest frame rendered

        def frames() -> Iterable[np.ndarray]:
            for _, t, frame in timed_frames(result, plan, params=params, renderers=renderers):
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
            renderer = renderers[0] if renderers else result.renderer(index, plan.device, params=params)
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
        summary = _summary(result, fidelities, formats, plan.pingpong, written, seconds)
        summary["outputs"] = plan.outputs  # what is diffmorph's here (see io.outputs)
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
                 "start": segment.describe_start()} for segment in result.segments],
        "seconds": seconds,
        "fidelity_db": fidelities,
    }
