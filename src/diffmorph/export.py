"""Writing a morph's outputs: videos, stills, the maps file and the config, all or nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffmorph._version import __version__
from diffmorph.api import MorphResult, resolve_device
from diffmorph.config import RENDER_SETTINGS, MorphConfig
from diffmorph.errors import ConfigError
from diffmorph.io.flow import write_flo, write_npy
from diffmorph.io.mapsfile import write_maps_file
from diffmorph.io.outputs import OutputFolder
from diffmorph.io.pictures import contact_sheet, flow_to_rgb, maps_picture
from diffmorph.io.writers import FORMATS, OUTPUT_NAMES, FrameWriter, clip_palette, even_size, open_writer
from diffmorph.optimize import scales_of
from diffmorph.renderer import Renderer, ease, timeline, to_uint8

DEFAULT_FORMATS = ("mp4", "gif")
EXPORT_FORMATS = (*FORMATS, "flow")  # "flow": the correspondence as .npy, .flo and a picture, each direction
FLOW_NAMES = tuple(f"flow_{d}.{ext}" for d in ("a_to_b", "b_to_a") for ext in ("npy", "flo", "png"))
MAPS_FILE = "maps.safetensors"
STILLS = ("a_to_b.png", "b_to_a.png", "maps.png", "contact_sheet.png", "config.json")
CONTACT_SHEET_FRAMES = 5

FrameCallback = Callable[[int], None]
"""Called as ``on_frame(frames_done)`` while rendering."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export` wrote and measured."""

    files: list[Path]
    frames: int
    fps: float
    fidelity: dict[str, float]
    notes: list[str]
    seconds: dict[str, float]  # "render_and_encode": the frame loop; "export": everything


def output_names(formats: Sequence[str]) -> list[str]:
    """Every name :func:`export` writes for ``formats``."""
    names = [OUTPUT_NAMES[kind] for kind in formats if kind in OUTPUT_NAMES]
    return names + (list(FLOW_NAMES) if "flow" in formats else []) + [MAPS_FILE, *STILLS]


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Validate and de-duplicate ``formats``, keeping their order."""
    unknown = [kind for kind in formats if kind not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"unknown format {unknown[0]!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if not formats:
        raise ConfigError(f"give at least one format from {', '.join(EXPORT_FORMATS)}")
    return tuple(dict.fromkeys(formats))


def export(result: MorphResult, folder: str | Path, *, formats: Sequence[str] = DEFAULT_FORMATS,
           device: str | torch.device | None = None, on_frame: FrameCallback | None = None,
           **render_settings: object) -> ExportReport:
    """Render ``result`` and write every output into ``folder``.

    Writes the animations in ``formats`` (``morph.mp4``, ``morph.gif``, ``morph.webp``, ``frames/``),
    with "flow" the correspondence of each direction (``flow_a_to_b.npy``, ``.flo``, ``.png`` and the
    same for ``b_to_a``; layout in :mod:`diffmorph.io.flow`),
    ``maps.safetensors``, ``a_to_b.png`` and ``b_to_a.png`` (the maps fully applied, at A's size),
    ``maps.png``, ``contact_sheet.png`` and ``config.json``. Frames stream to every writer as they are
    rendered; files appear only when all are complete.

    Args:
        render_settings: config fields to change for rendering, any of
            :data:`~diffmorph.config.RENDER_SETTINGS` (mode, pacing, frames, durations, fps, ease, hold,
            width, gif_width, gif_palette); None keeps the config's value. They are recorded in
            ``config.json``.
        device: where to render (the config's device by default).
        on_frame: optional progress callback.

    Raises:
        ConfigError, OutputError: bad settings or an unwritable folder, before anything is written.
    """
    formats = check_formats(formats)
    config = render_config(result.config, render_settings)
    (frame_count,) = config.segment_frames(1)
    result = replace(result, config=config)
    width, height = result.size
    notes = []
    if "mp4" in formats and even_size(width, height) != (width, height):
        even_w, even_h = even_size(width, height)
        notes.append(f"morph.mp4 is {even_w} x {even_h}: H.264 in yuv420p needs even sizes, so the last "
                     f"odd row or column is dropped")
    if "gif" in formats and config.fps > 50:
        notes.append("morph.gif plays at 50 frames/s: GIF cannot time frames faster")

    started = time.perf_counter()
    with OutputFolder(folder, output_names(formats)) as out:
        renderer = result.renderer(resolve_device(device) if isinstance(device, str) else device, frames=frame_count)
        # 1. Animations: render each frame once and hand it to every writer.
        sheet_times = {ease(k / (CONTACT_SHEET_FRAMES - 1), config.ease) for k in range(CONTACT_SHEET_FRAMES)}
        sheet: dict[float, tuple[float, np.ndarray]] = {}  # wanted time -> the nearest frame rendered

        def frames() -> Iterator[np.ndarray]:
            frame, frame_time = None, None
            for t in timeline(frame_count, config.fps, config.ease, config.hold):
                if t != frame_time:  # held frames repeat the last one
                    frame, frame_time = to_uint8(renderer.frame(t)), t
                nearest = min(sheet_times, key=lambda wanted: abs(wanted - t))
                if nearest not in sheet or abs(nearest - t) < abs(nearest - sheet[nearest][0]):
                    sheet[nearest] = (t, frame)
                yield frame

        keyframes = [to_uint8(renderer.a), to_uint8(renderer.b)]
        write_animations(out, formats, frames(), width, height, config, on_frame, keyframes)
        frames_seconds = time.perf_counter() - started

        # 2. Stills and the maps file.
        picked = [sheet[wanted] for wanted in sorted(sheet)]
        sheet_picture = contact_sheet([(f"t = {t:.2f}", frame) for t, frame in picked])
        sheet_picture.save(out.temp("contact_sheet.png"), format="PNG")
        a_to_b, b_to_a = renderer.a_to_b(), renderer.b_to_a()
        Image.fromarray(to_uint8(a_to_b)).save(out.temp("a_to_b.png"), format="PNG")
        Image.fromarray(to_uint8(b_to_a)).save(out.temp("b_to_a.png"), format="PNG")
        maps_picture(result.maps, width, height, scales_of(config)).save(out.temp("maps.png"), format="PNG")
        write_maps_file(out.temp(MAPS_FILE), result.contents(), __version__)
        if "flow" in formats:
            write_flows(out, renderer, "flow")
        fidelity = renderer.fidelity(a_to_b, b_to_a)
        seconds = {"render_and_encode": frames_seconds, "export": time.perf_counter() - started}
        summary = _summary(result, fidelity, formats, seconds)
        out.temp("config.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ExportReport(files=out.written, frames=frame_count, fps=config.fps, fidelity=fidelity, notes=notes,
                        seconds=seconds)


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


def write_animations(out: OutputFolder, formats: Sequence[str], frames: Iterable[np.ndarray], width: int,
                     height: int, config: MorphConfig, on_frame: FrameCallback | None,
                     keyframes: Sequence[np.ndarray]) -> None:
    """Stream ``frames`` to a writer per animation format in ``formats``, under ``out``'s temporary names.

    Args:
        keyframes: the images the morph passes through, in order, for the GIF's clip palette.

    The stack closes every writer even when rendering or another writer fails.
    """
    palette = clip_palette(keyframes) if "gif" in formats and config.gif_palette == "clip" else None
    with ExitStack() as closing:
        writers: list[FrameWriter] = []
        for kind in (kind for kind in formats if kind in FORMATS):
            writer = open_writer(kind, out.temp(OUTPUT_NAMES[kind]), width, height, config.fps,
                                 gif_width=config.gif_width, gif_palette=palette)
            closing.callback(writer.close)
            writers.append(writer)
        for index, frame in enumerate(frames):
            for writer in writers:
                writer.add(frame)
            if on_frame is not None:
                on_frame(index + 1)


def write_flows(out: OutputFolder, renderer: Renderer, prefix: str) -> None:
    """``{prefix}_a_to_b.npy``, ``.flo``, ``.png`` and the same for ``b_to_a`` (see :mod:`diffmorph.io.flow`)."""
    for direction, flow in renderer.forward_flows().items():
        write_npy(out.temp(f"{prefix}_{direction}.npy"), flow)
        write_flo(out.temp(f"{prefix}_{direction}.flo"), flow)
        picture = flow_to_rgb(flow.transpose(2, 0, 1)[::-1])  # flow_to_rgb takes (dy, dx) first
        Image.fromarray(picture).save(out.temp(f"{prefix}_{direction}.png"), format="PNG")


def _summary(result: MorphResult, fidelity: dict[str, float], formats: Sequence[str],
             seconds: dict[str, float]) -> dict:
    width, height = result.size
    return {
        "diffmorph_version": __version__,
        "config": result.config.to_dict(),
        "size": {"width": width, "height": height},
        "b_source_size": list(result.framing.source_size) if result.framing else [width, height],
        "framing": result.framing.describe() if result.framing else None,
        "formats": list(formats),
        "fit": {"steps": len(result.losses), "final_loss": result.losses[-1] if result.losses else None,
                "seconds": result.fit_seconds},
        "seconds": seconds,
        "fidelity_db": fidelity,
    }
