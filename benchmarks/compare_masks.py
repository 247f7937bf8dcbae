"""A keep mask against none, on a moved photo-like scene with a badge that stays in place.

The scene of ``compare_modes.py``'s moved pair, and the same badge (a ring with a bar, as a logo or a TV
channel's mark would be) drawn at the same place on both. Unguided, the start finds the scene's move and the
warp carries the badge with it: mid-morph the badge slides and shows twice. With a keep mask of the badge on A,
its warp is held at none and it only crossfades with itself: it stays still and sharp.

For each way it prints the badge's drift (mean length of each direction's warp over the badge, pixels), the
badge's PSNR in the middle frame against the badge itself (dB: a still badge is the badge), and the fidelity of
the whole morph (PSNR of A fully mapped to B and of B mapped to A, dB), and draws both as contact sheets:

    python benchmarks/compare_masks.py --sheet docs/masks_keep.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import diffmorph
from compare_modes import moved_pair, save_sheet
from diffmorph.io.flow import forward_flows
from diffmorph.ops import psnr
from diffmorph.render import to_uint8
from report import add_record_flag, print_header, recorded

SHEET_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)


def badge(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The badge's colours ``(size, size, 3)`` in [0, 1] and where it is, ``(size, size)`` bool: a ring with a bar
    in the top-left quarter."""
    y, x = np.mgrid[0:size, 0:size] / size
    distance = np.hypot(y - 0.22, x - 0.22)
    ring = (distance > 0.09) & (distance < 0.13)
    bar = (np.abs(y - 0.22) < 0.025) & (np.abs(x - 0.22) < 0.09)
    inside = distance < 0.15
    colours = np.zeros((size, size, 3))
    colours[...] = (0.95, 0.95, 0.9)
    colours[ring | bar] = (0.75, 0.1, 0.1)
    return colours, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=384, help="side of the pair, in pixels")
    parser.add_argument("--sheet", type=Path, help="write the contact sheets, unguided above, masked below")
    parser.add_argument("--steps", type=int, default=250, help="the fit's steps (default: the CLI's)")
    parser.add_argument("--refine", type=int, default=100, help="the refinement's steps (default: the CLI's)")
    add_record_flag(parser)
    args = parser.parse_args()

    colours, inside = badge(args.size)
    pair = [np.where(inside[..., None], colours * 255, image).round().astype(np.uint8)
            for image in moved_pair(args.size)]
    mask = (inside * 255).astype(np.uint8)
    rows, tiles = [], []
    for name, masks in (("none", None), ("keep mask", [mask, None])):
        result = diffmorph.morph(pair, masks=masks, device="cpu", steps=args.steps, refine=args.refine)
        flows = forward_flows(result.segments[0].maps, result.config.warp_scale, args.size, args.size)
        drift = [float(np.linalg.norm(flow, axis=-1)[inside].mean()) for flow in flows.values()]
        renderer = result.renderer(0, "cpu", frames=len(SHEET_TIMES))
        frames = [renderer.frame(t) for t in SHEET_TIMES]
        held = torch.from_numpy(inside)
        middle, a = frames[len(frames) // 2], result.images[0]
        badge_db = float(psnr(middle[..., held], a[..., held]))
        fidelity = result.fidelity()
        rows.append((name, drift, badge_db, fidelity))
        tiles.append([(f"{name}, t = {t:.2f}", to_uint8(frame)) for t, frame in zip(SHEET_TIMES, frames, strict=True)])
    if args.sheet:
        save_sheet(tiles, args.sheet, tile_width=200)

    with recorded("A keep mask against none", args.record):
        print_header("cpu")
        print(f"the moved pair of compare_modes.py at {args.size} px with a badge in place on both; {args.steps} "
              f"steps, refined {args.refine}, other settings the defaults")
        print()
        print("| mask | badge drift A→B / B→A px | badge in the middle frame dB | fidelity A→B / B→A dB |")
        print("|---|---|---|---|")
        for name, drift, badge_db, fidelity in rows:
            print(f"| {name} | {drift[0]:.2f} / {drift[1]:.2f} | {badge_db:.1f} | "
                  f"{fidelity['a_to_b_psnr']:.2f} / {fidelity['b_to_a_psnr']:.2f} |")


if __name__ == "__main__":
    main()
