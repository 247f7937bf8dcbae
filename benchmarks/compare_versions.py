"""The default morph of this diffmorph against an earlier one's, pair by pair: the quality budget of a change.

A change meant to make morphs faster must leave them as good. This script morphs every pair twice with the
defaults (100 frames as PNG): once with the diffmorph in ``--before`` (the ``src`` folder of an earlier checkout,
e.g. ``git worktree add /tmp/before v0.1.0``) and once with this one, measures both with this checkout's
``diffmorph.evaluate`` (the same code as ``diffmorph eval``), and prints them side by side with the differences
that the budget bounds: mid-frame detail, fidelity (the worse direction), pacing CV and largest / median step,
and the perceptual path where the ``[eval]`` extra is installed. "wall s" is the whole ``diffmorph morph``
command (PNG frames, not the default MP4 and GIF: see ``bench_morph.py`` for the default outputs' times).

Pairs: those of ``compare_modes.py`` (the demo pair, "textured", "moved") at 512 x 512, the photo pairs of
``compare_objectives.py`` (where scikit-image and matplotlib are installed; ``--no-photos`` leaves them out) and
the demo pair at 1024 x 1024. The sheet shows each pair's frames at t = 0.25, 0.5 and 0.75, before then after.
Nothing is downloaded.

    git worktree add /tmp/before <earlier revision>
    python benchmarks/compare_versions.py --before /tmp/before/src --sheet docs/versions.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_morph import source_folder, with_source
from compare_modes import moved_pair, pair_files, save_sheet, textured_pair
from diffmorph.demo import demo_pair
from diffmorph.evaluate import EvalReport, evaluate
from report import add_record_flag, print_header, recorded

SHEET_TIMES = (0.25, 0.5, 0.75)


def morph(source: Path | None, a: Path, b: Path, out: Path, args: argparse.Namespace) -> tuple[float, EvalReport]:
    """``diffmorph morph`` of one pair with the defaults, by the diffmorph in ``source`` (None: this one)."""
    command = [sys.executable, "-m", "diffmorph", "morph", str(a), str(b), "-o", str(out), "--format", "frames",
               "--frames", str(args.frames), "--device", args.device, "-q"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=with_source(source))
    wall = time.perf_counter() - started
    return wall, evaluate(out / "frames", a, b, maps_file=out / "maps.safetensors")


def pairs(args: argparse.Namespace, folder: Path) -> list[tuple[str, Path, Path]]:
    generated = {"demo": demo_pair(), "textured": textured_pair(), "moved": moved_pair()}
    if args.photos:
        from compare_objectives import photo_pairs  # it imports compare_modes: not at the top

        generated.update(photo_pairs())
    generated["demo 1024"] = demo_pair(1024, 1024)
    return pair_files(None, folder, generated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=source_folder, required=True,
                        help="the src folder of the diffmorph to compare with (an earlier checkout)")
    parser.add_argument("--no-photos", dest="photos", action="store_false", help="leave the photo pairs out")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--sheet", type=Path, help="write the before-and-after contact sheet here (PNG)")
    parser.add_argument("--device", default="cpu")
    add_record_flag(parser)
    args = parser.parse_args()
    if not (args.before / "diffmorph" / "__init__.py").is_file():
        raise SystemExit(f"--before {args.before}: no diffmorph package there; give an earlier checkout's src folder")

    rows, tiles = [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name, a, b in pairs(args, folder):
            measured = {}
            row_tiles = []
            for version, source in (("before", args.before), ("after", None)):
                out = folder / f"{name}_{version}"
                measured[version] = morph(source, a, b, out, args)
                frames = sorted((out / "frames").iterdir())
                picked = [frames[round(t * (len(frames) - 1))] for t in SHEET_TIMES]
                row_tiles += [(f"{name}, {version}, t = {t:.2f}", np.asarray(Image.open(path).convert("RGB")))
                              for t, path in zip(SHEET_TIMES, picked, strict=True)]
            rows.append((name, measured))
            tiles.append(row_tiles)
            print(f"  done: {name}", file=sys.stderr)

    with recorded("This diffmorph's default morph against an earlier one's", args.record):
        print_header(args.device)
        print(f"{args.frames} frames as PNG, default options; before: the diffmorph in {args.before}")
        print()
        print("| pair | wall s before → after | mid-frame detail | pacing CV | largest / median step | "
              "fidelity, worse direction dB | perceptual path |")
        print("|---|---|---|---|---|---|---|")
        for name, measured in rows:
            (wall_0, r0), (wall_1, r1) = measured["before"], measured["after"]
            print(f"| {name} | {wall_0:.1f} → {wall_1:.1f} | {change(r0.mid_frame_detail, r1.mid_frame_detail, 3)} | "
                  f"{change(r0.pacing_cv, r1.pacing_cv, 3)} | "
                  f"{change(r0.pacing_max_over_median, r1.pacing_max_over_median, 2)} | "
                  f"{change(worse(r0), worse(r1), 2)} | {change(r0.perceptual_path, r1.perceptual_path, 3)} |")
    if args.sheet:
        save_sheet(tiles, args.sheet, tile_width=200)


def worse(report: EvalReport) -> float:
    return min(report.fidelity_a_to_b_db, report.fidelity_b_to_a_db)


def change(before: float | None, after: float | None, digits: int) -> str:
    """``before → after (±difference)``, or a dash where the metric was not measured."""
    if before is None or after is None:
        return "—"
    return f"{before:.{digits}f} → {after:.{digits}f} ({after - before:+.{digits}f})"


if __name__ == "__main__":
    main()
