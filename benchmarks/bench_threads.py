"""A morph's wall time by thread count, on a quiet machine and beside processes that keep cores busy.

Each run is one ``diffmorph morph`` of a photo-like pair (compare_modes.py's "moved") with default settings,
timed from start to exit, with ``--threads N`` for each fixed count from 1 to the machine's cores and with the
default (``--threads 0``: as many as are idle). "Busy" processes each keep one core taken (a Python loop) for the
whole run. The runs of one load take turns (1, 2, ..., default, then again), so that a drift in the machine's
speed touches every count alike; the table shows each count's median and its ratio to the best fixed count's.
Before ``--threads`` existed, a morph always used PyTorch's own count: one thread per core, the last fixed row.

    python benchmarks/bench_threads.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from compare_modes import moved_pair
from report import add_record_flag, print_header, recorded


def timed_morph(a: Path, b: Path, out: Path, threads: int, options: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffmorph", "morph", str(a), str(b), "-o", str(out), "--threads",
                    str(threads), "-q", *options], check=True,
                   env={name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="side of the pair, in pixels")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy processes beside the morph")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each thread count under each load")
    parser.add_argument("--options", default="", help="more options for each `diffmorph morph`, one string")
    add_record_flag(parser)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    counts = [*range(1, cores + 1), 0]
    with tempfile.TemporaryDirectory() as temporary, recorded("Thread counts beside busy processes", args.record):
        folder = Path(temporary)
        for name, image in zip(("a.png", "b.png"), moved_pair(args.size), strict=True):
            Image.fromarray(image).save(folder / name)
        print_header("cpu")
        print(f"one `diffmorph morph` of a {args.size} x {args.size} pair, default settings; median of "
              f"{args.repeats} runs, whole command\n")
        print("| busy processes | threads | median s | / best fixed |")
        print("|---|---|---|---|")
        for busy in args.busy:
            loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                times: dict[int, list[float]] = {count: [] for count in counts}
                for repeat in range(args.repeats):
                    for count in counts:
                        out = folder / f"out_{busy}_{count}_{repeat}"
                        times[count].append(timed_morph(folder / "a.png", folder / "b.png", out, count,
                                                        args.options.split()))
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
            medians = {count: statistics.median(values) for count, values in times.items()}
            best = min(value for count, value in medians.items() if count > 0)
            for count in counts:
                label = "default (idle cores)" if count == 0 else str(count)
                print(f"| {busy} | {label} | {medians[count]:.1f} | {medians[count] / best:.2f} |")
            print(f"  done: {busy} busy", file=sys.stderr)


if __name__ == "__main__":
    main()
