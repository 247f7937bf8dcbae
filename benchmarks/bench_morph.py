"""Time a whole morph (fit, render, encode) at several sizes and print a table.

Each case runs in a fresh subprocess so its peak memory is its own. Images are the built-in demo
pair drawn at each size (no downloads). Fidelity is the PSNR of A fully mapped to B against B, and
of B mapped to A against A.

    python benchmarks/bench_morph.py                       # 512 and 1024 with default settings
    python benchmarks/bench_morph.py --sizes 512 1024 2048 --device cuda
    python benchmarks/bench_morph.py --sizes 1024 --reference   # adds the original schedule: 1000 steps at 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch

import diffmorph
from diffmorph.demo import demo_pair
from diffmorph.export import export
from diffmorph.io.images import to_tensor


def run_case(size: int, device: str, frames: int, overrides: dict) -> dict:
    """Fit, render and export one square pair of ``size``; return the measurements."""
    config = dataclasses.replace(diffmorph.MorphConfig(device=device, frames=frames), **overrides).validate()
    a, b = demo_pair(size, size)
    image_a, image_b = to_tensor(a), to_tensor(b)
    target = diffmorph.resolve_device(device)
    started = time.perf_counter()
    result = diffmorph.fit_pair(image_a, image_b, config)
    fit_s = time.perf_counter() - started

    renderer = result.renderer(target)
    started = time.perf_counter()
    for _ in renderer.frames(frames):
        pass
    render_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = export(result, folder, formats=["mp4"], device=target)
        export_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if target.type == "cuda" else None
    return {"size": size, "device": str(target), "steps": config.steps, "work_size": config.size,
            "fit_s": fit_s, "render_fps": frames / render_s, "export_s": export_s, "total_s": fit_s + export_s,
            "peak_rss_mb": peak_mb, "gpu_peak_mb": gpu_peak_mb, **report.fidelity}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"diffmorph {diffmorph.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--steps", type=int, help="override the default steps")
    parser.add_argument("--reference", action="store_true",
                        help="also run the original schedule (1000 steps at a 1024 working size) on the largest size")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case as JSON, run in a child
    args = parser.parse_args()

    if args.case:
        case = json.loads(args.case)
        print(json.dumps(run_case(case["size"], args.device, args.frames, case["overrides"])))
        return

    base = {"steps": args.steps} if args.steps else {}
    cases = [("default", size, base) for size in args.sizes]
    if args.reference:
        cases.append(("reference", max(args.sizes), {"steps": 1000, "size": 1024}))
    rows = []
    for label, size, overrides in cases:
        child = [sys.executable, __file__, "--device", args.device, "--frames", str(args.frames),
                 "--case", json.dumps({"size": size, "overrides": overrides})]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        rows.append((label, json.loads(done.stdout.strip().splitlines()[-1])))
        print(f"  done: {label} {size}", file=sys.stderr)

    print(f"machine: {machine()}")
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: python benchmarks/bench_morph.py {' '.join(sys.argv[1:])}")
    print()
    print(f"| case | pair | device | fit (steps @ size) | fit s | render frames/s | export s ({args.frames} frames, "
          "MP4 + stills) | total s | peak RSS MB | A→B dB | B→A dB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['size']}² | {r['device']} | {r['steps']} @ {r['work_size']} | {r['fit_s']:.1f} | "
              f"{r['render_fps']:.1f} | {r['export_s']:.1f} | {r['total_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['a_to_b_psnr']:.2f} | {r['b_to_a_psnr']:.2f} |")


if __name__ == "__main__":
    main()
