"""The ``diffmorph`` command: parse flags, build the config, call the library, report in one line each."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch
from tqdm import tqdm

from diffmorph._version import __version__
from diffmorph.api import MorphResult, fit_pair, prepare_pair, resolve_device
from diffmorph.config import CHOICES, FITS, RENDER_SETTINGS, MorphConfig
from diffmorph.demo import demo_pair
from diffmorph.errors import ConfigError, DiffmorphError
from diffmorph.evaluate import GOOD_VALUES, evaluate
from diffmorph.export import (
    DEFAULT_FORMATS,
    EXPORT_FORMATS,
    ExportReport,
    check_formats,
    export,
    output_names,
    render_config,
)
from diffmorph.io.images import DEFAULT_MAX_PIXELS, ImageSource
from diffmorph.io.outputs import check_output_folder
from diffmorph.optimize import FitParams
from diffmorph.renderer import timeline
from diffmorph.sequence import (
    SequenceResult,
    export_sequence,
    is_sequence_file,
    morph_sequence,
    sequence_output_names,
    sequence_timeline,
)
from diffmorph.start import describe as describe_start

_DEFAULTS = MorphConfig()
_HELP = {
    "mode": "how frames are made: sharp (fine detail kept at full contrast) or classic (the original)",
    "pacing": "timing of the maps: even (equal change per frame), linear (the original) or auto "
              "(even for sharp, linear for classic)",
    "objective": "what the fit minimises: classic (the original) or coarse-to-fine (blurred images and colour "
                 "held back at first, so the warp may carry what moved far; try it when a morph shows content twice)",
    "align": "where the warp starts: global (from the move of the whole picture, where B clearly shows A's "
             "content moved, zoomed or turned), local (that move, then bent region by region, for a "
             "subject that changes shape, such as two faces; it can tear a subject that moved far), "
             "subject (one compact subject that stands out of a plain ground in both images, such as a ball or "
             "the sun, carried from its place in A to its place in B, larger or smaller, while the ground "
             "crossfades), auto (the move, bent where bending makes the two pictures' structure agree well "
             "enough, as it often does for two faces; else the subject's move where both images have one) or "
             "none (no warp, as the original)",
    "size": "working resolution of the fit (square); outputs keep the images' own size",
    "steps": "gradient steps of the fit",
    "refine": "steps refining the fitted maps themselves at twice the working size; 0 keeps the network's "
              "maps, as the original",
    "schedule": "learning-rate schedule: onecycle (warm up, then anneal) or constant (the original)",
    "lr": "Adam learning rate, the peak for onecycle (default: 6e-3 for onecycle, 2e-4 for constant)",
    "grad_clip": "largest gradient norm per step; 0 disables clipping, as in the original",
    "precision": "network arithmetic: auto (bf16 where the hardware has it), fp32 (the original) or bf16",
    "warp_scale": "warp displacement at map value 1, as a fraction of the image size",
    "mult_scale": "strength of the colour-factor map",
    "add_scale": "strength of the colour-offset map",
    "frames": "frames from A to B, both included",
    "durations": "seconds of each segment (one per segment; instead of --frames)",
    "fps": "frames per second of the animations",
    "ease": "timing of the frames: linear, in (slow start), out (slow end) or in-out",
    "hold": "seconds to show A before the morph and B after it",
    "width": "width of every output in pixels, aspect kept; 0 keeps the first image's size",
    "gif_palette": "colours of morph.gif: clip (one palette for the whole morph) or frame (one per frame)",
    "gif_width": "largest width of morph.gif in pixels, aspect kept; 0 keeps the output size",
    "seed": "seed of the network's initial weights (same seed, same morph on a CPU)",
    "device": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    "fit": "how B is fitted to A's frame when sizes differ: " + ", ".join(FITS),
    "background": "colour under transparent pixels and of --fit pad borders (name or #rrggbb)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"diffmorph: {message}", file=sys.stderr)

    def bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, disable=self.quiet, file=sys.stderr, dynamic_ncols=True,
                    leave=False)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(MorphConfig)}
    for name in names:
        default = getattr(_DEFAULTS, name)
        kind = fields[name].type
        choices = CHOICES.get(name)
        if choices:
            parser.add_argument(_flag(name), choices=choices, default=None, help=f"{_HELP[name]} (default: {default})")
        elif name == "lr":
            parser.add_argument("--lr", type=float, default=None, metavar="LR", help=_HELP[name])
        elif name == "durations":
            parser.add_argument("--durations", type=float, nargs="+", default=None, metavar="SECONDS",
                                help=_HELP[name])
        elif name == "add_first":
            parser.add_argument("--add-first", action="store_true", default=None,
                                help="add the colour offset before applying the colour factor")
        else:
            converter = {"int": int, "float": float, "str": str}[kind]
            parser.add_argument(_flag(name), type=converter, default=None, metavar=name.split("_")[0].upper(),
                                help=f"{_HELP[name]} (default: {default})")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR",
                        help="folder for the outputs (created if missing)")
    parser.add_argument("--format", action="extend", nargs="+", metavar="FORMAT", default=None,
                        help=f"outputs to write, any of {', '.join(EXPORT_FORMATS)} (flow: the correspondence as "
                             f".npy, .flo and a picture), space- or comma-separated (default: "
                             f"{' '.join(DEFAULT_FORMATS)})")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffmorph", description="Morph two images into each other: no landmarks, prompts or "
                     "pretrained weights. A small network is fitted to the pair, then discarded.")
    parser.add_argument("--version", action="version", version=f"diffmorph {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    morph = commands.add_parser("morph", help="fit and render a morph of two or more images",
                                description="Fit the maps that turn each image into the next and write the morph "
                                            "into OUTDIR. For two images: morph.mp4, morph.gif, maps.safetensors, "
                                            "a_to_b.png, b_to_a.png, maps.png, contact_sheet.png and config.json; "
                                            "for a chain: the animations, maps.safetensors (every segment), "
                                            "contact_sheet.png and config.json.")
    morph.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                       help="two or more images, morphed in order (the first sets the output size)")
    morph.add_argument("--loop", action="store_true", help="add a segment from the last image back to the first")
    morph.add_argument("--pingpong", action="store_true", help="play forward, then backward")
    _add_output_flags(morph)
    _add_config_flags(morph, [f.name for f in dataclasses.fields(MorphConfig)])
    morph.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help=f"refuse larger inputs (default: {DEFAULT_MAX_PIXELS:,})")
    morph.set_defaults(handler=_cmd_morph)

    render = commands.add_parser("render", help="re-render a maps file without fitting again",
                                 description="Render the morph stored in MAPSFILE (from diffmorph morph) again, "
                                             "with other frames, fps or formats.")
    render.add_argument("maps_file", type=Path, metavar="MAPSFILE", help="maps.safetensors from diffmorph morph")
    render.add_argument("--pingpong", action="store_true", help="play forward, then backward")
    _add_output_flags(render)
    _add_config_flags(render, [*RENDER_SETTINGS, "device"])
    render.set_defaults(handler=_cmd_render)

    demo = commands.add_parser("demo", help="morph a built-in pair of images drawn in code",
                               description="Morph a built-in sunset into a night sky (drawn in code, nothing "
                                           "downloaded) and write every output into OUTDIR.")
    _add_output_flags(demo)
    _add_config_flags(demo, [f.name for f in dataclasses.fields(MorphConfig) if f.name not in ("fit", "background")])
    demo.set_defaults(handler=_cmd_demo)
    evaluation = commands.add_parser("eval", help="measure a morph: endpoints, mid-frame detail, pacing, fidelity",
                                     description="Measure a morph from its frames (a video, an animated GIF or "
                                                 "WebP, or a folder of frames) and the two images it was made from.")
    evaluation.add_argument("animation", type=Path, metavar="ANIMATION", help="morph.mp4, morph.gif or frames/")
    evaluation.add_argument("source", type=Path, metavar="A", help="first image")
    evaluation.add_argument("target", type=Path, metavar="B", help="last image")
    evaluation.add_argument("--maps", type=Path, metavar="MAPSFILE", help="maps file, for the fidelity metrics")
    evaluation.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_config_flags(evaluation, ["fit", "background"])
    evaluation.set_defaults(handler=_cmd_eval, quiet=True)
    return parser


def _config_from(args: argparse.Namespace, base: MorphConfig = _DEFAULTS) -> MorphConfig:
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(MorphConfig)
               if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **changes).validate()


def _formats(args: argparse.Namespace) -> tuple[str, ...]:
    if args.format is None:
        return DEFAULT_FORMATS
    return check_formats([part for item in args.format for part in item.split(",") if part])


def _fit_and_export(source_a: ImageSource, source_b: ImageSource, args: argparse.Namespace, log: _Log,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    config = _config_from(args)
    config.segment_frames(1)  # one duration for a pair, checked before fitting
    device = resolve_device(config.device)
    formats = _formats(args)
    check_output_folder(args.output, output_names(formats))
    image_a, image_b, framing = prepare_pair(source_a, source_b, config, max_pixels=max_pixels)
    log(framing.describe())
    with log.bar(config.steps + config.refine, "fitting", "step") as bar:
        def progress(done: int, loss: float) -> None:
            bar.set_postfix_str(f"loss {loss:.5f}", refresh=False)
            bar.update(done - bar.n)

        result = fit_pair(image_a, image_b, config, framing=framing, progress=progress)
    started = describe_start(result.alignment, result.bent, result.subject, config.align)
    if started:
        log(started)
    fine = FitParams().refine_zoom * config.size
    refined = f", then refined the maps {config.refine} steps at {fine} x {fine}," if config.refine else ""
    log(f"fitted {config.steps} steps at {config.size} x {config.size}{refined} on {device} in "
        f"{result.fit_seconds:.1f} s (final loss {result.losses[-1]:.5f})")
    return _export(result, args, log, formats)


def _export(result: MorphResult, args: argparse.Namespace, log: _Log, formats: tuple[str, ...]) -> int:
    settings = {name: getattr(args, name) for name in RENDER_SETTINGS}
    config = render_config(result.config, settings)
    total = len(timeline(config.segment_frames(1)[0], config.fps, config.ease, config.hold))
    with log.bar(total, "rendering", "frame") as bar:
        report = export(result, args.output, formats=formats, device=getattr(args, "device", None),
                        on_frame=lambda done: bar.update(done - bar.n), **settings)
    _report(report, args.output, log)
    return 0


def _report(report: ExportReport, folder: Path, log: _Log) -> None:
    for note in report.notes:
        log(note)
    fidelity = report.fidelity
    log(f"wrote {len(report.files)} outputs to {folder} ({report.frames} frames at {report.fps:g} fps; fidelity "
        f"A→B {fidelity['a_to_b_psnr']:.1f} dB, B→A {fidelity['b_to_a_psnr']:.1f} dB)")


def _cmd_morph(args: argparse.Namespace, log: _Log) -> int:
    if len(args.images) < 2:
        raise ConfigError(f"give at least two images to morph, got {len(args.images)}")
    if len(args.images) == 2 and not args.loop and not args.pingpong:
        return _fit_and_export(args.images[0], args.images[1], args, log, max_pixels=args.max_pixels)
    config = _config_from(args)
    formats = _formats(args)
    segments = len(args.images) - 1 + args.loop
    config.segment_frames(segments)  # one duration per segment, checked before fitting
    check_output_folder(args.output, sequence_output_names(formats, segments))
    with log.bar((config.steps + config.refine) * segments, f"fitting {segments} segments", "step") as bar:
        def progress(done: int, loss: float) -> None:
            bar.set_postfix_str(f"loss {loss:.5f}", refresh=False)
            bar.update(done - bar.n)

        result = morph_sequence(args.images, config, loop=args.loop, progress=progress, max_pixels=args.max_pixels)
    for index, framing in enumerate(result.framings):
        log(framing.describe(f"image {index + 2}", "image 1"))
    for index, segment in enumerate(result.segments):
        started = describe_start(segment.alignment, segment.bent, segment.subject, config.align)
        if started:
            log(f"segment {index + 1}: {started}")
    log(f"fitted {segments} segments in {sum(s.fit_seconds for s in result.segments):.1f} s")
    return _export_sequence(result, args, log, formats)


def _export_sequence(result: SequenceResult, args: argparse.Namespace, log: _Log, formats: tuple[str, ...]) -> int:
    settings = {name: getattr(args, name) for name in RENDER_SETTINGS}
    config = render_config(result.config, settings)
    total = len(sequence_timeline(len(result.segments), config, pingpong=args.pingpong))
    with log.bar(total, "rendering", "frame") as bar:
        written = export_sequence(result, args.output, formats=formats, pingpong=args.pingpong,
                                  device=getattr(args, "device", None), on_frame=lambda done: bar.update(done - bar.n),
                                  **settings)
    log(f"wrote {len(written)} outputs to {args.output} ({total} frames at {config.fps:g} fps, "
        f"{len(result.segments)} segments)")
    return 0


def _cmd_demo(args: argparse.Namespace, log: _Log) -> int:
    sunset, night = demo_pair()
    return _fit_and_export(sunset, night, args, log)


def _cmd_render(args: argparse.Namespace, log: _Log) -> int:
    formats = _formats(args)
    if args.device is not None:
        resolve_device(args.device)
    render_config(_DEFAULTS, {name: getattr(args, name) for name in RENDER_SETTINGS})
    if is_sequence_file(args.maps_file):
        sequence = SequenceResult.load(args.maps_file)
        check_output_folder(args.output, sequence_output_names(formats, len(sequence.segments)))
        log(f"loaded {args.maps_file}: {len(sequence.segments)} segments, {sequence.size[0]} x {sequence.size[1]}")
        return _export_sequence(sequence, args, log, formats)
    result = MorphResult.load(args.maps_file)
    log(f"loaded {args.maps_file}: {result.size[0]} x {result.size[1]}, fitted {result.config.steps} steps"
        + (f", refined {result.config.refine}" if result.config.refine else ""))
    if args.pingpong:
        check_output_folder(args.output, sequence_output_names(formats, 1))
        return _export_sequence(SequenceResult(segments=[result]), args, log, formats)
    check_output_folder(args.output, output_names(formats))
    return _export(result, args, log, formats)


def _cmd_eval(args: argparse.Namespace, log: _Log) -> int:
    config = _config_from(args)
    report = evaluate(args.animation, args.source, args.target, maps_file=args.maps, fit=config.fit,
                      background=config.background)
    values = report.to_dict()
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    print(f"{'metric':<26} {'value':>9}  good values")
    for name, value in values.items():
        if value is None:
            continue
        shown = f"{value:d}" if isinstance(value, int) else f"{value:.3f}"
        print(f"{name:<26} {shown:>9}  {GOOD_VALUES.get(name, '')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 1 a reported error, 2 bad usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    log = _Log(args.quiet)
    try:
        return args.handler(args, log)
    except DiffmorphError as exc:
        print(f"diffmorph: error: {exc}", file=sys.stderr)
    except torch.OutOfMemoryError:
        print("diffmorph: error: out of memory on the device; lower --size, use smaller images or --device cpu",
              file=sys.stderr)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"diffmorph: error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("diffmorph: interrupted; no outputs were written", file=sys.stderr)
        return 130
    return 1


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
