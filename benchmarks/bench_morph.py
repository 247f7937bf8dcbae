"""Time whole morphs as a user runs them and print a table with the machine, date and command.

Each case runs a ``diffmorph`` command in a child process, ``--runs`` times (3 by default):

- "morph": ``python -m diffmorph morph A B -o OUT --frames 100`` with the default outputs (MP4 and GIF,
  stills, maps file): Python start-up, decoding, fit, frames rendered and encoded, stills, maps file;
- "render": ``python -m diffmorph render OUT/maps.safetensors -o OUT2 --frames 100`` of that morph, the
  same outputs without the fit;
- "start-up": ``python -m diffmorph --version``.

"wall" is the command's whole run and "peak MB" the child's own peak resident memory. The fit and render
times and the fidelity (PSNR of A fully mapped to B against B, and of B mapped to A against A) are read from
the ``config.json`` the command writes; the largest size's median morph is broken down into where its wall
time went. Images are the built-in demo pair drawn at each size, or your own pair resized (``--images``).
Nothing is downloaded.

    python benchmarks/bench_morph.py                          # 512, 1024, 2048 and a 3840 x 2160 render
    python benchmarks/bench_morph.py --sizes 512 1024 --no-4k
    python benchmarks/bench_morph.py --sizes 1024 --reference # with the original schedule, side by side
    python benchmarks/bench_morph.py --unrefined              # each size also without the refinement
    python benchmarks/bench_morph.py --device cuda
    python benchmarks/bench_morph.py --sizes 512 1024 --no-4k --before /tmp/before/src   # against an earlier one

With ``--before`` (the ``src`` folder of an earlier checkout: ``git worktree add /tmp/before <revision>``) every
morph and render run is also run by that diffmorph, each of its runs just before this one's, so that both see
the machine alike (its speed drifts from minute to minute), and the table adds each case's wall time ratio,
this / before, run by run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffmorph.demo import demo_pair
from diffmorph.io.images import load_image
from diffmorph.optimize import FitParams
from report import add_record_flag, print_header, recorded

# The method's original schedule: 1000 steps of Adam at a constant 2e-4, no clipping, on a 1024 x 1024
# working size, float32, the network's maps as they are.
REFERENCE = ["--size", "1024", "--steps", "1000", "--schedule", "constant", "--lr", "2e-4", "--grad-clip", "0",
             "--precision", "fp32", "--align", "none", "--refine", "0"]
RENDER_4K = (3840, 2160)


def write_pair(folder: Path, width: int, height: int, images: list[str] | None) -> tuple[Path, Path]:
    if images:
        pair = [np.asarray(Image.fromarray((load_image(p) * 255).round().astype(np.uint8))
                           .resize((width, height), Image.Resampling.LANCZOS)) for p in images]
    else:
        pair = [(x * 255).round().astype(np.uint8) for x in demo_pair(width, height)]
    paths = (folder / "a.png", folder / "b.png")
    for array, path in zip(pair, paths, strict=True):
        Image.fromarray(array).save(path)
    return paths


def source_folder(text: str) -> Path:
    """``--before``'s folder, refused unless it holds a diffmorph package: a wrong path would otherwise import this
    checkout's diffmorph and compare it with itself."""
    folder = Path(text)
    if not (folder / "diffmorph" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text} holds no diffmorph package; give the src folder of another "
                                         f"checkout (git worktree add /tmp/before <revision>: /tmp/before/src)")
    return folder


def with_source(source: Path | None) -> dict[str, str] | None:
    """A child's environment that imports the diffmorph in ``source`` (the ``src`` folder of another checkout)
    first; None (this one's environment) where no source is given."""
    if source is None:
        return None
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(source), os.environ.get("PYTHONPATH")))))


def timed(command: list[str], source: Path | None = None) -> tuple[float, float]:
    """Run ``command`` (with the diffmorph in ``source``, where given: :func:`with_source`); return its wall time
    in seconds and its own peak RSS in MB."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=with_source(source))
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(command)}\n{child.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def morph_runs(label: str, width: int, height: int, flags: list[str], args: argparse.Namespace) -> list[dict]:
    """``--runs`` morphs of one pair, and (for the default case) as many renders of the first one's maps; with
    ``--before``, each run by that diffmorph too, just before this one's (rows marked "before")."""
    rows = []
    versions = [("before", args.before), ("", None)] if args.before else [("", None)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        a, b = write_pair(folder, width, height, args.images)
        for run in range(args.runs):
            for version, source in versions:
                out = folder / f"out{version}{run}"
                command = [sys.executable, "-m", "diffmorph", "morph", str(a), str(b), "-o", str(out), "--frames",
                           str(args.frames), "--device", args.device, "-q", *shlex.split(args.options), *flags]
                rows.append(row(label, width, height, run, *timed(command, source), out, version))
        if label == "default":
            for run in range(args.runs):
                for version, source in versions:  # each version renders its own first morph's maps
                    out = folder / f"render{version}{run}"
                    command = [sys.executable, "-m", "diffmorph", "render",
                               str(folder / f"out{version}0" / "maps.safetensors"), "-o", str(out),
                               "--frames", str(args.frames), "--device", args.device, "-q"]
                    rows.append(row("render", width, height, run, *timed(command, source), out, version))
    return rows


def row(label: str, width: int, height: int, run: int, wall: float, peak: float, out: Path, version: str = "") -> dict:
    """One run's figures, from its wall time, peak memory and the ``config.json`` it wrote in ``out``."""
    summary = json.loads((out / "config.json").read_text())
    fitted = label != "render"
    return {"case": label, "version": version, "size": f"{width}×{height}", "run": run + 1, "wall": wall, "peak": peak,
            "fit": summary["fit"][0]["seconds"] if fitted else None, "steps": fit_steps(summary["config"]),
            "frames_s": summary["seconds"]["render_and_encode"], "export": summary["seconds"]["export"],
            **summary["fidelity_db"][0]}


def startup_runs(args: argparse.Namespace) -> list[float]:
    """Wall times of ``python -m diffmorph --version``."""
    command = [sys.executable, "-m", "diffmorph", "--version"]
    return [timed(command)[0] for _ in range(args.runs)]


def fit_steps(config: dict) -> str:
    """The fit's steps and working size, and the refinement's where there is one: "250 @ 128 + 100 @ 256"."""
    steps = f"{config['steps']} @ {config['size']}"
    refine = config.get("refine", 0)
    return f"{steps} + {refine} @ {FitParams().refine_zoom * config['size']}" if refine else steps


def render_case(args: argparse.Namespace) -> dict:
    """Fit a 3840 x 2160 pair with the defaults, then time ``diffmorph render`` of it alone."""
    width, height = RENDER_4K
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        a, b = write_pair(folder, width, height, args.images)
        fit = [sys.executable, "-m", "diffmorph", "morph", str(a), str(b), "-o", str(folder / "fit"),
               "--format", "mp4", "--frames", "2", "--device", args.device, "-q"]
        timed(fit)
        command = [sys.executable, "-m", "diffmorph", "render", str(folder / "fit" / "maps.safetensors"),
                   "-o", str(folder / "out"), "--format", "mp4", "--frames", str(args.frames),
                   "--device", args.device, "-q"]
        wall, peak = timed(command)
        return row("render, MP4 only", width, height, 0, wall, peak, folder / "out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="square pair sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs of each case")
    parser.add_argument("--options", default="", help="more options for every morph, e.g. \"--steps 500\"")
    parser.add_argument("--images", nargs=2, metavar=("A", "B"), help="your own pair instead of the demo pair")
    parser.add_argument("--reference", action="store_true",
                        help="also run the original schedule (1000 steps at a 1024 working size, float32) on the "
                             "largest size")
    parser.add_argument("--unrefined", action="store_true",
                        help="also run each size with --refine 0 (the network's maps as they are), to time "
                             "the refinement")
    parser.add_argument("--no-4k", dest="render_4k", action="store_false", help="skip the 3840 x 2160 render")
    parser.add_argument("--before", type=source_folder,
                        help="the src folder of an earlier diffmorph: run every morph and render by it too, in turn")
    add_record_flag(parser)
    args = parser.parse_args()

    rows = []
    for size in args.sizes:
        rows += morph_runs("default", size, size, [], args)
        print(f"  done: default and render {size}", file=sys.stderr)
        if args.unrefined:
            rows += morph_runs("--refine 0", size, size, ["--refine", "0"], args)
            print(f"  done: --refine 0 {size}", file=sys.stderr)
    if args.reference:
        size = max(args.sizes)
        rows += morph_runs("reference", size, size, REFERENCE, args)
        print(f"  done: reference {size}", file=sys.stderr)
    if args.render_4k:
        rows.append(render_case(args))
        print("  done: render 4K", file=sys.stderr)
    startup = startup_runs(args)

    with recorded("Whole morphs: time, memory, fidelity", args.record):
        table(rows, startup, args)


def table(rows: list[dict], startup: list[float], args: argparse.Namespace) -> None:
    print_header(args.device)
    print(f"pair: {' and '.join(args.images) if args.images else 'built-in demo pair'}; device {args.device}; "
          f"{args.frames} frames; default outputs (MP4, GIF, stills, maps file) unless the case says otherwise; "
          f"{args.runs} runs of each case")
    print()
    print("| case | pair | run | fit: steps @ size | fit s | render + encode s | frames/s | wall s | peak MB | "
          "A→B dB | B→A dB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fit = "—" if r["fit"] is None else f"{r['fit']:.1f}"
        case = f"{r['case']}, before" if r["version"] else r["case"]
        print(f"| {case} | {r['size']} | {r['run']} | {r['steps']} | {fit} | {r['frames_s']:.1f} | "
              f"{args.frames / r['frames_s']:.1f} | {r['wall']:.1f} | {r['peak']:.0f} | {r['a_to_b_psnr']:.2f} | "
              f"{r['b_to_a_psnr']:.2f} |")
    print()
    print(f"start-up (`python -m diffmorph --version`): {', '.join(f'{s:.2f}' for s in startup)} s")
    if args.before:
        ratios(rows, args)
    morphs = [r for r in rows if r["case"] == "default" and not r["version"]
              and r["size"] == f"{max(args.sizes)}×{max(args.sizes)}"]
    if morphs:
        r = sorted(morphs, key=lambda r: r["wall"])[len(morphs) // 2]
        parts = {"start-up, decoding, checks": r["wall"] - r["fit"] - r["export"], "fit": r["fit"],
                 "frames rendered and encoded": r["frames_s"],
                 "stills, fidelity, maps file": r["export"] - r["frames_s"]}
        print()
        print(f"Where the median {r['size']} morph's {r['wall']:.1f} s went:")
        print()
        print("| part | s | share |")
        print("|---|---|---|")
        for part, seconds in parts.items():
            print(f"| {part} | {seconds:.1f} | {seconds / r['wall']:.0%} |")


def ratios(rows: list[dict], args: argparse.Namespace) -> None:
    """Each case's wall time against the earlier diffmorph's: medians, and the ratio of each run to the run of
    the earlier one just before it."""
    print()
    print(f"Against `--before {args.before}`, run in turn (wall s; ratio this / before):")
    print()
    print("| case | pair | before, median | this, median | ratio, median | ratio per run |")
    print("|---|---|---|---|---|---|")
    cases = dict.fromkeys((r["case"], r["size"]) for r in rows if r["version"])
    for case, size in cases:
        before, this = ([r["wall"] for r in rows if (r["case"], r["size"], r["version"]) == (case, size, version)]
                        for version in ("before", ""))
        per_run = [t / b for t, b in zip(this, before, strict=True)]
        print(f"| {case} | {size} | {np.median(before):.1f} | {np.median(this):.1f} | {np.median(per_run):.2f} | "
              f"{', '.join(f'{ratio:.2f}' for ratio in per_run)} |")


if __name__ == "__main__":
    main()
