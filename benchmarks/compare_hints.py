"""Point hints on pairs whose unguided fit takes the wrong correspondence: 0, 2, 4 and 8 point pairs.

Two pairs drawn in code, each with a known correspondence of one object:

- "look-alike": a striped disc on the left of A and on the right of B, where B's left holds a plain look-alike
  disc. Unguided, the disc stays and turns into the look-alike while the other fades in.
- "mirrored": an arrow pointing right in A and the same arrow mirrored in B. Unguided, each half morphs into
  the half in place; the intended correspondence flips it, tip onto tip.

The hints are points on the object and their known partners. For each count the table gives the farthest a
hinted point lands from its partner (pixels) and the median over 24 points of the object that were not hinted
(how far the whole object follows), both at t = 1 and relative to the frame's diagonal; the sheet shows each
morph at t = 0, 0.25 ... 1, a row per count:

    python benchmarks/compare_hints.py --sheet docs/hints.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

import diffmorph
from compare_modes import save_sheet
from diffmorph.render import to_uint8
from diffmorph.start.points import landing_errors
from report import add_record_flag, print_header, recorded

SHEET_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
COUNTS = (0, 2, 4, 8)


def look_alike(side: int) -> tuple[list[np.ndarray], callable, np.ndarray]:
    """The pair, the known correspondence (A's pixel -> B's) and the object's points on A (``(M, 2)`` x, y)."""
    y, x = np.mgrid[0:side, 0:side] / side
    ground = (0.55, 0.7, 0.45)
    a, b = np.full((side, side, 3), ground), np.full((side, side, 3), ground)
    for image, cy, cx, stripe in ((a, 0.5, 0.25, True), (b, 0.5, 0.25, False), (b, 0.45, 0.75, True)):
        inside = np.hypot(y - cy, x - cx) < 0.12
        image[inside] = (0.8, 0.15, 0.1) if stripe else (0.75, 0.2, 0.15)
        if stripe:
            image[inside & (np.abs(y - cy) < 0.03)] = (0.95, 0.9, 0.3)

    def partner(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return px + 0.5 * side, py - 0.05 * side

    return [_uint8(a), _uint8(b)], partner, _ring(0.25 * side, 0.5 * side, 0.1 * side)


def mirrored(side: int) -> tuple[list[np.ndarray], callable, np.ndarray]:
    """An arrow pointing right, and mirrored; the correspondence flips it about the frame's middle."""
    y, x = np.mgrid[0:side, 0:side] / side
    shaft = (np.abs(y - 0.5) < 0.06) & (x > 0.2) & (x < 0.6)
    head = (x >= 0.6) & (x < 0.8) & (np.abs(y - 0.5) < 0.2 * (0.8 - x) / 0.2)
    a = np.full((side, side, 3), (0.9, 0.88, 0.8))
    a[shaft | head] = (0.15, 0.3, 0.7)
    a[head & (x > 0.7)] = (0.85, 0.2, 0.1)  # a red tip: what must go where
    b = a[:, ::-1].copy()

    def partner(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return side - 1 - px, py

    points = np.array([[side * f, side * 0.5] for f in np.linspace(0.22, 0.78, 12)]
                      + [[side * f, side * (0.5 + s * 0.1 * (0.8 - f) / 0.2)] for f in np.linspace(0.62, 0.74, 6)
                         for s in (-1, 1)])
    return [_uint8(a), _uint8(b)], partner, points


def _ring(cx: float, cy: float, radius: float) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    inner = np.linspace(0, 2 * math.pi, 8, endpoint=False)
    return np.concatenate((np.stack((cx + radius * np.cos(angles), cy + radius * np.sin(angles)), axis=1),
                           np.stack((cx + 0.5 * radius * np.cos(inner), cy + 0.5 * radius * np.sin(inner)), axis=1)))


def _uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255).round().astype(np.uint8)


def in_fractions(points: np.ndarray, side: int) -> torch.Tensor:
    return torch.tensor([[(ay + 0.5) / side, (ax + 0.5) / side, (by + 0.5) / side, (bx + 0.5) / side]
                         for ax, ay, bx, by in points], dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192, help="side of the pairs, in pixels")
    parser.add_argument("--steps", type=int, default=250, help="the fit's steps (default: the CLI's)")
    parser.add_argument("--refine", type=int, default=100, help="the refinement's steps (default: the CLI's)")
    parser.add_argument("--sheet", type=Path, help="write the contact sheets, a row per pair and count")
    add_record_flag(parser)
    args = parser.parse_args()

    side, rows, tiles = args.size, [], []
    for name, make in (("look-alike", look_alike), ("mirrored", mirrored)):
        pair, partner, points = make(side)
        everything = np.concatenate((points, np.stack(partner(points[:, 0], points[:, 1]), axis=1)), axis=1)
        for count in COUNTS:
            chosen = np.linspace(0, len(points) - 1, count).round().astype(int) if count else np.array([], int)
            hints = everything[chosen] if count else None
            result = diffmorph.morph(pair, points=hints, device="cpu", steps=args.steps, refine=args.refine)
            maps, scale = result.segments[0].maps, result.config.warp_scale
            errors = np.array(landing_errors(maps, in_fractions(everything, side), scale, side, side))
            others = np.setdiff1d(np.arange(len(points)), chosen)
            hinted = float(errors[chosen].max()) if count else math.nan
            rows.append((name, count, hinted, float(np.median(errors[others]))))
            renderer = result.renderer(0, "cpu", frames=len(SHEET_TIMES))
            tiles.append([(f"{name}, {count} points, t = {t:.2f}", to_uint8(renderer.frame(t)))
                          for t in SHEET_TIMES])
    if args.sheet:
        save_sheet(tiles, args.sheet, tile_width=160)

    with recorded("Point hints on pairs the unguided fit gets wrong", args.record):
        print_header("cpu")
        diagonal = math.hypot(side, side)
        print(f"pairs drawn at {side} px (diagonal {diagonal:.0f} px); {args.steps} steps, refined {args.refine}, "
              f"other settings the defaults; errors at t = 1")
        print()
        print("| pair | point pairs | farthest hinted point px (% of diagonal) | median other point of the object px "
              "(% of diagonal) |")
        print("|---|---|---|---|")
        for name, count, hinted, others in rows:
            shown = "—" if math.isnan(hinted) else f"{hinted:.2f} ({100 * hinted / diagonal:.1f} %)"
            print(f"| {name} | {count} | {shown} | {others:.1f} ({100 * others / diagonal:.1f} %) |")


if __name__ == "__main__":
    main()
