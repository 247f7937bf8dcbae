"""The ``diffmorph`` command: parse flags, build the config, call the library, report in one line each.

Every option is declared once, in :mod:`diffmorph.options`; the commands' parsers are built from there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import NoReturn

from diffmorph import options
from diffmorph._version import __version__
from diffmorph.allocator import keep_freed_memory
from diffmorph.config import DEFAULT_MAX_PIXELS, RENDER_SETTINGS
from diffmorph.errors import ConfigError, DiffmorphError
from diffmorph.interrupts import interrupted, stop_on_signals
from diffmorph.options import DEFAULTS, config_from, formats_from


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
    handlers = {"morph": _cmd_morph, "render": _cmd_render, "demo": _cmd_demo, "eval": _cmd_eval,
                "batch": _cmd_batch, "ui": _cmd_ui}
    return options.build_parser("Morph two or more images into each other: no landmarks, prompts or pretrained "
                                 "weights. A small network is fitted to each pair, then discarded.",
                                 f"diffmorph {__version__}", handlers)


def _fit_and_export(images: Sequence, args: argparse.Namespace, log: _Log, *, loop: bool = False,
                    max_pixels: int = DEFAULT_MAX_PIXELS, **guidance: object) -> int:
    from diffmorph.io.outputs import check_output_folder
    from diffmorph.pipeline import morph
    from diffmorph.plan import make_plan

    plan = make_plan(config_from(args), len(images), loop=loop, formats=formats_from(args), pingpong=args.pingpong)
    check_output_folder(args.output, plan.outputs)
    config, segments = plan.config, plan.segments
    what = "fitting" if segments == 1 else f"fitting {segments} segments"
    bars = []  # opened at the first step, so that an error in decoding the images stands alone on its line

    def progress(done: int, loss: float) -> None:
        if not bars:
            bars.append(log.bar(plan.fit_steps, what, "step"))
        bars[0].set_postfix_str(f"loss {loss:.5f}", refresh=False)
        bars[0].update(done - bars[0].n)

    try:
        result = morph(images, plan=plan, progress=progress, max_pixels=max_pixels, **guidance)
    finally:
        for bar in bars:
            bar.close()
    names = ("B", "A") if len(images) == 2 else None
    for index, framing in enumerate(result.framings):
        log(framing.describe(*(names or (f"image {index + 2}", "image 1"))))
    _log_starts(result, log)
    fine = plan.refine_side
    refined = f", then refined the maps {config.refine} steps at {fine} x {fine}," if config.refine else ""
    seconds = sum(segment.fit_seconds for segment in result.segments)
    losses = ", ".join(f"{segment.losses[-1]:.5f}" for segment in result.segments)
    log(f"fitted {segments} segment{'s' * (segments > 1)} of {config.steps} steps at {config.size} x {config.size}"
        f"{refined} on {plan.device} in {seconds:.1f} s (final loss {losses})")
    return _export(result, plan, args, log)


def _log_starts(result, log: _Log) -> None:
    """A line per segment on where its warp started, where it did not start from nothing."""
    for index, segment in enumerate(result.segments):
        started = segment.describe_start()
        if started:
            log(started if len(result.segments) == 1 else f"segment {index + 1}: {started}")


def _export(result, plan, args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.export import export

    with log.bar(plan.frames, "rendering", "frame") as bar:
        report = export(result, args.output, plan=plan, on_frame=lambda done: bar.update(done - bar.n))
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
    masks = None
    if args.mask_a or args.mask_b:
        if len(args.images) != 2:
            raise ConfigError("--mask-a and --mask-b guide a pair; for a chain give masks per image in Python "
                              "(diffmorph.morph(..., masks=[...]))")
        masks = [args.mask_a, args.mask_b]
    elif args.mask_mode:
        raise ConfigError("--mask-mode says what a mask means: give --mask-a or --mask-b too")
    return _fit_and_export(args.images, args, log, loop=args.loop, max_pixels=args.max_pixels, masks=masks,
                           mask_mode=args.mask_mode or "keep", points=args.points)


def _cmd_demo(args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.demo import demo_pair

    return _fit_and_export(list(demo_pair()), args, log)


def _cmd_render(args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.device import resolve_device
    from diffmorph.io.outputs import check_formats, check_output_folder
    from diffmorph.pipeline import MorphResult
    from diffmorph.plan import render_config

    settings = {name: getattr(args, name) for name in RENDER_SETTINGS}
    # The flags are checked before the maps file is read, so that a typo is told first.
    formats = check_formats(formats_from(args))
    if args.device is not None:
        resolve_device(args.device)
    render_config(DEFAULTS, settings)
    result = MorphResult.load(args.maps_file)
    plan = result.plan(settings, formats=formats, pingpong=args.pingpong, device=args.device)
    check_output_folder(args.output, plan.outputs)
    width, height = result.size
    segments = plan.segments
    log(f"loaded {args.maps_file}: {width} x {height}, {segments} segment{'s' * (segments > 1)}, fitted "
        f"{result.config.steps} steps" + (f", refined {result.config.refine}" if result.config.refine else ""))
    _log_starts(result, log)
    return _export(result, plan, args, log)


def _cmd_eval(args: argparse.Namespace, log: _Log) -> int:
    from diffmorph.evaluate import evaluate

    config = config_from(args)
    report = evaluate(args.animation, args.source, args.target, maps_file=args.maps, fit=config.fit,
                      background=config.background)
    values = report.to_dict()
    if values["perceptual_path"] is None:
        print("note: no perceptual path: it needs the [eval] extra (pip install 'diffmorph[eval]')", file=sys.stderr)
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    print(report.table())
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
    from diffmorph.device import resolve_device  # after the plain checks: it loads PyTorch

    device = args.device or DEFAULTS.device
    resolve_device(device)
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
        app = serve(args.host, args.port, limits, device, block=False, verbose=args.verbose)
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
        return interrupted(exc, "; no outputs were written")
    except RuntimeError as exc:  # torch.OutOfMemoryError is one; torch is imported lazily
        if "out of memory" not in str(exc):
            raise
        print("diffmorph: error: out of memory on the device; lower --size, use smaller images or --device cpu",
              file=sys.stderr)
    return 1


def run() -> NoReturn:
    """Console-script entry point: SIGINT, SIGTERM and SIGHUP end the run cleanly, with 130, 143 or 129."""
    stop_on_signals()
    try:
        code = main()
    except KeyboardInterrupt as exc:  # before main's own handling: while parsing the command line
        code = interrupted(exc)
    sys.exit(code)
