"""Eight small pairs through ``diffmorph batch`` (Ray) against the same eight ``diffmorph morph`` runs one after
another, on this machine; prints and records the table with the machine, date and command.

Ray's overhead is the batch's wall time less the sum of its rows' own fit and render times divided by the
jobs that ran at once, as a share of the batch's wall time.

    python benchmarks/bench_batch.py
    python benchmarks/bench_batch.py --size 256 --cpus-per-job 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffmorph.demo import demo_images
from report import add_record_flag, print_header, recorded

PAIRS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=160, help="side of each square image")
    parser.add_argument("--cpus-per-job", type=float, default=1.0)
    parser.add_argument("--frames", type=int, default=30)
    add_record_flag(parser)
    args = parser.parse_args()
    flags = ["--frames", str(args.frames), "--format", "mp4", "--device", "cpu", "-q"]

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        scenes = demo_images(args.size, args.size)
        for index, scene in enumerate(scenes):
            Image.fromarray((np.asarray(scene) * 255).round().astype(np.uint8)).save(folder / f"{index}.png")
        pairs = [(k % 3, (k + 1 + k // 3) % 3) for k in range(PAIRS)]
        rows = ["name,image_1,image_2"] + [f"pair{k},{a}.png,{b}.png" for k, (a, b) in enumerate(pairs)]
        (folder / "rows.csv").write_text("\n".join(rows) + "\n")

        started = time.perf_counter()
        for k, (a, b) in enumerate(pairs):
            subprocess.run([sys.executable, "-m", "diffmorph", "morph", str(folder / f"{a}.png"),
                            str(folder / f"{b}.png"), "-o", str(folder / "one" / f"pair{k}"), *flags], check=True)
        one_by_one = time.perf_counter() - started
        print("  done: one after another", file=sys.stderr)

        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffmorph", "batch", str(folder / "rows.csv"), "-o",
                        str(folder / "batch"), "--cpus-per-job", str(args.cpus_per_job), *flags], check=True)
        batched = time.perf_counter() - started
        lines = [json.loads(line) for line in (folder / "batch" / "batch.jsonl").read_text().splitlines()]
        work = sum(line["fit_seconds"] + line["render_seconds"] for line in lines)
        at_once = max(1, int((os.cpu_count() or 1) // args.cpus_per_job))
        overhead = max(0.0, batched - work / at_once) / batched

    with recorded("Batch on Ray against one morph after another", args.record):
        print_header("cpu")
        print(f"{PAIRS} pairs of the demo scenes at {args.size}×{args.size}, {args.frames} frames to MP4, defaults "
              f"otherwise; {args.cpus_per_job:g} CPU per job, {at_once} jobs at once")
        print()
        print("| run | wall s | rows' own fit + render s | Ray overhead |")
        print("|---|---|---|---|")
        print(f"| diffmorph morph × {PAIRS}, one after another | {one_by_one:.1f} | — | — |")
        print(f"| diffmorph batch | {batched:.1f} | {work:.1f} | {100 * overhead:.0f} % |")


if __name__ == "__main__":
    main()
