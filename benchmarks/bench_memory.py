"""Check that memory does not grow with the number of frames: peak RSS of ``diffmorph render`` per format.

Fits the demo pair once at the given size, then renders it with few and with many frames in each
format, each in a child process, and prints a table with the machine, date and command.

    python benchmarks/bench_memory.py                  # 1024 x 1024, 40 and 200 frames
    python benchmarks/bench_memory.py --size 2048 --frames 50 400
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_morph import timed, write_pair
from report import add_record_flag, print_header, recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--frames", type=int, nargs=2, default=[40, 200], metavar=("FEW", "MANY"))
    parser.add_argument("--device", default="cpu")
    add_record_flag(parser)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        a, b = write_pair(folder, args.size, args.size, None)
        timed([sys.executable, "-m", "diffmorph", "morph", str(a), str(b), "-o", str(folder / "fit"),
               "--format", "mp4", "--frames", "2", "--device", args.device, "-q"])
        for kind in ("mp4", "gif", "webp", "frames"):
            peaks = []
            for count in args.frames:
                _, peak = timed([sys.executable, "-m", "diffmorph", "render", str(folder / "fit" / "maps.safetensors"),
                                 "-o", str(folder / f"{kind}{count}"), "--format", kind, "--frames", str(count),
                                 "--device", args.device, "-q"])
                peaks.append(peak)
            rows.append((kind, peaks))
            print(f"  done: {kind}", file=sys.stderr)

    few, many = args.frames
    with recorded("Memory against frame count", args.record):
        print_header(args.device)
        print(f"pair: built-in demo pair at {args.size}×{args.size}; peak RSS of diffmorph render")
        print()
        print(f"| format | {few} frames MB | {many} frames MB | growth per frame MB |")
        print("|---|---|---|---|")
        for kind, (low, high) in rows:
            print(f"| {kind} | {low:.0f} | {high:.0f} | {(high - low) / (many - few):.2f} |")


if __name__ == "__main__":
    main()
