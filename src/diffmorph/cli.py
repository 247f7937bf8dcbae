"""The ``diffmorph`` command: parse flags, build the config, call the library, report in one line each.

Every option is declared once, in :mod:`diffmorph.options`; the commands' parsers are built from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from diffmorph._version import __version__
from diffmorph.allocator import keep_freed_memory
from diffmorph.config import DEFAULT_MAX_PIXELS, RENDER_SETTINGS, MorphConfig
from diffmorph.errors import ConfigError, DiffmorphError
from diffmorph.options import (
    DEFAULTS,
    FIELDS,
    Parser,
    add_options,
    config_from,
    formats_from,
)


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"diffmorph: {message}", file=sys.stderr)

    def bar(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=self.quiet, file=sys.stderr, dynamic_ncols=True,
                    leave=False)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="diffmorph", description="Morph two or more images into each other: no landmarks, prompts "
                     "or pretrained weights. A small network is fitted to each pair, then discarded.")
    parser.add_argument("--version", action="version", version=f"diffmorph {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    every = [item.name for item in dataclasses.fields(MorphConfig)]

    morph = commands.add_parser("morph", help="fit and render a morph of two or more images",
                                description="Fit the maps that turn each image into the next and write the morph "
                                            "into OUTDIR: the animations, maps.safetensors, contact_sheet.png and "
                                            "config.json; for two images also a_to_b.png, b_to_a.png and maps.png.")
    morph.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                       help="two or more images, morphed in order (the first sets the output size)")
    add_options(morph, "morph", every)
    morph.set_defaults(handler=_cmd_morph)

    render = commands.add_parser("render", help="re-render a maps file without fitting again",
                                 description="Render the morph stored in MAPSFILE (from diffmorph morph) again, "
                                             "with other frames, timing, size or formats.")
    render.add_argument("maps_file", type=Path, metavar="MAPSFILE", help="maps.safetensors from diffmorph morph")
    add_options(render, "render", [*RENDER_SETTINGS, "device"])
    render.set_defaults(handler=_cmd_render)

    demo = commands.add_parser("demo", help="morph a built-in pair of images drawn in code",
                               description="Morph a built-in sunset into a night sky (drawn in code, nothing "
                                           "downloaded) and write every output into OUTDIR.")
    add_options(demo, "demo", [name for name in every if name not in ("fit", "background")])
    demo.set_defaults(handler=_cmd_demo)

    evaluation = commands.add_parser("eval", help="measure a morph: endpoints, mid-frame detail, pacing, fidelity",
                                     description="Measure a morph from its frames (a video, an animated GIF or "
                                                 "WebP, or a folder of frames) and the two images it was made from.")
    evaluation.add_argument("animation", type=Path, metavar="ANIMATION", help="morph.mp4, morph.gif or frames/")
    evaluation.add_argument("source", type=Path, metavar="A", help="first image")
    evaluation.add_argument("target", type=Path, metavar="B", help="last image")
    evaluation.add_argument("--maps", type=Path, metavar="MAPSFILE", help="maps file, for the fidelity metrics")
    evaluation.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_options(evaluation, "eval", ["fit", "background"])
    evaluation.set_defaults(handler=_cmd_eval, quiet=True)

    batch = commands.add_parser("batch", help="morph every row of a manifest on Ray, locally or on a cluster",
                                description="Morph every row of MANIFEST (CSV with name, image_1, image_2, ... and "
                                            "options named as morph's; or JSON Lines with name and images) into "
                                            "OUTDIR/<name>/, on Ray. Rows whose folder is complete are skipped; "
                                            "OUTDIR/batch.jsonl records every row. The options below are every "
                                            "row's defaults.")
    batch.add_argument("manifest", type=Path, metavar="MANIFEST", help="the rows, .csv or .jsonl")
    engine = batch.add_argument_group("batch options")
    engine.add_argument("--address", default=None, help="a Ray cluster to join (auto, ray://host:10001); default: "
                        "RAY_ADDRESS, or a private local Ray")
    engine.add_argument("--cpus-per-job", type=float, default=1.0, metavar="N", help="CPUs per row (default: 1)")
    engine.add_argument("--gpus-per-job", type=float, default=0.0, metavar="F",
                        help="GPUs per row, fractions allowed (default: 0)")
    engine.add_argument("--retries", type=int, default=2, metavar="N",
                        help="tries again of a row whose worker died (default: 2)")
    engine.add_argument("--force", action="store_true", help="redo rows whose folders are already complete")
    add_options(batch, "batch", every)
    batch.set_defaults(handler=_cmd_batch)

    ui = commands.add_parser("ui", help="serve a page in the browser to morph, re-render and download",
                             description="Serve diffmorph's web page (Gradio; pip extra diffmorph[ui]) and print "
                                         "its URL. It binds to 127.0.0.1 unless --host says otherwise.")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    ui.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                    help=f"refuse larger uploads (default: {DEFAULT_MAX_PIXELS:,})")
    ui.add_argument("--max-upload-mb", type=float, default=50.0, metavar="MB", help="largest upload (default: 50)")
    ui.add_argument("--max-disk-gb", type=float, default=4.0, metavar="GB",
                    help="the visitors' files together; past it the longest idle go first (default: 4)")
    ui.add_argument("--device", default="auto", help=FIELDS["device"].metadata["help"])
    ui.add_argument("--verbose", action="store_true",
                    help="log each visitor's error with its traceback, not only its one line")
    ui.set_defaults(handler=_cmd_ui, quiet=False)
    return parser


def _fit_and_export(images: Sequence, args: argparse.Namespace, log: _Log, *, loop: bool = False,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    from diffmorph.io.outputs import check_output_folder, output_names
    from diffmorph.pipeline import morph, resolve_device

    config = config_from(args)
    segments = len(images) - 1 + loop
    config.segment_frames(segments)  # one duration per segment, checked before fitting
    device = resolve_device(config.device)
    formats = formats_from(args)
    check_output_folder(args.output, output_names(formats, segments))
    what = "fitting" if segments == 1 else f"fitting {segments} segments"
    bars = []  # opened at the first step, so that an error in decoding the images stands alone on its line

    def progress(done: int, loss: float) -> None:
        if not bars:
            bars.append(log.bar((config.steps + config.refine) * segments, what, "step"))
        bars[0].set_postfix_str(f"loss {loss:.5f}", refresh=False)
        bars[0].update(done - bars[0].n)

    try:
        result = morph(images, config, loop=loop, progress=progress, max_pixels=max_pixels)
    finally:
        for bar in bars:
            bar.close()
    names = ("B", "A") if len(images) == 2 else None
    for index, framing in enumerate(result.framings):
        log(framing.describe(*(names or (f"image {index + 2}", "image 1"))))
    for index, segment in enumerate(result.segments):
        started = segment.describe_start(config.align)
        if started:
            log(started if segments == 1 else f"segment {index + 1}: {started}")
    fine = 2 * config.size
    refined = f", then refined the maps {config.refine} steps at {fine} x {fine}," if config.refine else ""
    seconds = sum(segment.fit_seconds for segment in result.segments)
    losses = ", ".join(f"{segment.losses[-1]:.5f}" for segment in result.segments)
    log(f"fitted {segments} segment{'s' * (segments > 1)} of {config.steps} steps at {config.size} x {config.size}"
        f"{refined} on {device} in {seconds:.1f} s (final loss {losses})")
    return _export(result, args, log, formats)


def _export(result, args: argparse.Namespace, log: _Log, formats: tuple[str, ...]) -> int:
    from diffmorph.export import export, frame_count, render_config

    settings = {name: getattr(args, name) for name in RENDER_SETTINGS}
    config = render_config(result.config, settings)
    total = frame_count(config, len(result.segments), args.pingpong)
    with log.bar(total, "rendering", "frame") as bar:
        report = export(result, args.output, formats=formats, pingpong=args.pingpong,
                        device=getattr(args, "device", None), on_frame=lambda done: bar.update(done - bar.n),
                        **settings)
    for note in report.notes:
        log(note)
    fidelity = "; ".join(f"A→B {f['a_to_b_psnr']:.1f} dB, B→A {f['b_to_a_psnr']:.1f} dB" for f in report.fidelity)
    segments = len(result.segments)
    log(f"wrote {len(report.files)} outputs to {args.output} ({report.frames} frames at {report.fps:g} fps"
        f"{f', {segments} segments' if segments > 1 else ''}; fidelity {fidelity})")
    return 0


def _cmd_morph(args: argparse.Namespace, log: _Log) -> int:
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
    if len(args.images) < 2:
        raise ConfigError(f"give at least two images to morph, got {len(args.images)}")
    return _fit_and_export(args.images, args, log, loop=args.loop, max_pixels=args.max_pixels)


def _cmd_demo(args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.demo import demo_pair

    return _fit_and_export(list(demo_pair()), args, log)


def _cmd_render(args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.export import render_config
    from diffmorph.io.outputs import check_output_folder, output_names
    from diffmorph.pipeline import MorphResult, resolve_device

    formats = formats_from(args)
    if args.device is not None:
        resolve_device(args.device)
    render_config(DEFAULTS, {name: getattr(args, name) for name in RENDER_SETTINGS})
    result = MorphResult.load(args.maps_file)
    check_output_folder(args.output, output_names(formats, len(result.segments)))
    width, height = result.size
    segments = len(result.segments)
    log(f"loaded {args.maps_file}: {width} x {height}, {segments} segment{'s' * (segments > 1)}, fitted "
        f"{result.config.steps} steps" + (f", refined {result.config.refine}" if result.config.refine else ""))
    return _export(result, args, log, formats)


def _cmd_eval(args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.evaluate import GOOD_VALUES, evaluate

    config = config_from(args)
    report = evaluate(args.animation, args.source, args.target, maps_file=args.maps, fit=config.fit,
                      background=config.background)
    values = report.to_dict()
    if values["perceptual_path"] is None:
        print("note: no perceptual path: it needs the [eval] extra (pip install 'diffmorph[eval]')", file=sys.stderr)
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    good = dict(GOOD_VALUES)
    if report.codec_loss_first is not None:  # a lossy animation: its endpoints are exact up to the codec's loss
        for name, limit in zip(("endpoint_error_first", "endpoint_error_last"), report.endpoint_limits(), strict=True):
            good[name] = f"≤ {limit:.2f} (1 beyond the codec's loss)"
    print(f"{'metric':<26} {'value':>9}  good values")
    for name, value in values.items():
        if value is None:
            continue
        shown = f"{value:d}" if isinstance(value, int) else f"{value:.3f}"
        print(f"{name:<26} {shown:>9}  {good.get(name, '')}")
    return 0


def _cmd_batch(args: argparse.Namespace, log: _Log) -> int:
    import time

    from diffmorph.batch import batch, summary

    bars = []  # opened once the manifest is read, so that its errors stand alone on their line
    started = time.monotonic()
    try:
        results = batch(args.manifest, args.output, config_from(args), loop=args.loop, pingpong=args.pingpong,
                        formats=formats_from(args), address=args.address, cpus_per_job=args.cpus_per_job,
                        gpus_per_job=args.gpus_per_job, retries=args.retries, force=args.force,
                        max_pixels=args.max_pixels, on_start=lambda rows: bars.append(log.bar(rows, "rows", "row")),
                        on_row=lambda result: bars[0].update(1))
    finally:
        for bar in bars:
            bar.close()
    failed = [result for result in results if result.status == "failed"]
    say = log if not failed else _Log(quiet=False)  # failed rows are errors: told even with --quiet
    for result in failed:
        say(f"{result.name}: {result.error}")
    say(f"{summary(results, time.monotonic() - started)}; see {args.output / 'batch.jsonl'}")
    return 1 if failed else 0


def _cmd_ui(args: argparse.Namespace, log: _Log) -> int:
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_pixels < 1 or not args.max_upload_mb > 0 or not args.max_disk_gb > 0:
        raise ConfigError("--max-pixels, --max-upload-mb and --max-disk-gb must be positive")
    from diffmorph.pipeline import resolve_device  # after the plain checks: it loads PyTorch

    resolve_device(args.device)
    # Everything Gradio writes for this server (uploads, its cache, the visitors' folders) goes into one folder of
    # its own, removed when the server stops; Gradio reads the variable when it is imported.
    own = None if os.environ.get("GRADIO_TEMP_DIR") else tempfile.mkdtemp(prefix="diffmorph-ui-")
    if own:
        os.environ["GRADIO_TEMP_DIR"] = own
    try:
        try:
            from diffmorph.ui import UiLimits, serve
        except ImportError as exc:
            raise ConfigError(f"the web UI needs Gradio ({exc.name} is missing): pip install 'diffmorph[ui]'") from None
        limits = UiLimits(max_pixels=args.max_pixels, max_bytes=int(args.max_upload_mb * 2**20),
                          disk_bytes=int(args.max_disk_gb * 2**30))
        app = serve(args.host, args.port, limits, args.device, block=False, verbose=args.verbose)
        print(f"diffmorph: serving on {app.local_url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        try:
            app.block_thread()
        finally:
            app.close()
    finally:
        if own:
            shutil.rmtree(own, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 1 a reported error, 2 bad usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    log = _Log(args.quiet)
    keep_freed_memory()
    try:
        return args.handler(args, log)
    except DiffmorphError as exc:
        print(f"diffmorph: error: {exc}", file=sys.stderr)
    except MemoryError:
        print("diffmorph: error: out of memory; lower --size or --width, or use smaller images", file=sys.stderr)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"diffmorph: error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, "; no outputs were written")
    except RuntimeError as exc:  # torch.OutOfMemoryError is one; torch is imported lazily
        if "out of memory" not in str(exc):
            raise
        print("diffmorph: error: out of memory on the device; lower --size, use smaller images or --device cpu",
              file=sys.stderr)
    return 1


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as Ctrl-C raises KeyboardInterrupt: every output folder
    on the way out removes its partial files."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second signal must not cut the clean-up short
        signal.signal(other, signal.SIG_IGN)
    raise Signalled(signum) if signum != signal.SIGINT else KeyboardInterrupt()


def run() -> NoReturn:
    """Console-script entry point: SIGINT, SIGTERM and SIGHUP end the run cleanly, with 130, 143 or 129."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        code = main()
    except KeyboardInterrupt as exc:  # before main's own handling: while parsing the command line
        code = _interrupted(exc)
    sys.exit(code)


def _interrupted(exc: KeyboardInterrupt, consequence: str = "") -> int:
    """Say which signal ended the run; return the exit status the shell expects of it (128 + its number)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    print(f"diffmorph: interrupted ({signal.Signals(signum).name}){consequence}", file=sys.stderr)
    return 128 + signum
