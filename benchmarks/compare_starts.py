"""Where the two images do not correspond: each start (``--align auto``, ``global``, ``none``) on pairs drawn in code.

Photo pairs with busy backgrounds are where a morph most often melts: the subject corresponds, the ground behind
it does not, and a start or a fit that bends the ground to match it swirls it mid-morph or shows two silhouettes.
The pairs, all drawn here (nothing is downloaded):

- "turn": a figure turns a little and steps aside, in front of a wallpaper that changed (another pattern, colour
  and spacing): the subject corresponds, the busy ground does not.
- "grounds": the same toy in the same place, on foliage, then on a brick wall.
- "viewpoint": one scene from two viewpoints: a far wall, a pillar and a near crate, each layer moved by its own
  parallax (everything corresponds, not by one move).
- "landscapes": two unrelated landscapes (hills, fields and sky of other shapes): nothing corresponds.
- "demo": the built-in pair, which morphs well, to see that nothing gets worse.

With ``--photos``, the pairs that morph well instead: ``compare_modes.py``'s textured and moved pairs and the photo
pairs of ``compare_objectives.py`` (where scikit-image and matplotlib are installed).

For each pair and start, ``diffmorph morph`` writes PNG frames, and ``diffmorph.evaluate`` (the code of ``diffmorph
eval``) measures them: mid-frame detail, pacing, fidelity, the perceptual path (ST-LPIPS summed over consecutive
frames; needs the ``[eval]`` extra) and the warp melt. With ``--sheets DIR`` a contact sheet per pair is written
there (rows: the starts; columns: t = 0, 0.25, 0.5, 0.75, 1).

    python benchmarks/compare_starts.py --sheets docs
    python benchmarks/compare_starts.py --photos --starts auto
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from compare_modes import fractal_noise, morph_frames, moved_pair, pair_files, save_sheet, textured_pair
from diffmorph.demo import demo_pair
from report import add_record_flag, print_header, recorded

STARTS = ("auto", "global", "none")
SHEET_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
OVERSAMPLE = 3  # shapes are drawn this many times larger, then reduced: antialiased edges


def wallpaper(size: int, period: float, motif: str, colours: tuple[tuple[int, ...], ...], seed: int) -> np.ndarray:
    """A repetitive, busy wallpaper: a lattice of ``motif`` ("diamond" or "flower") with paper grain; float RGB."""
    ground, ink, accent = (np.asarray(c, np.float64) / 255 for c in colours)
    ys, xs = np.mgrid[0:size, 0:size] / period
    u, v = (xs + ys) % 1.0 - 0.5, (xs - ys) % 1.0 - 0.5  # a diagonal lattice
    if motif == "diamond":
        shape = np.clip((0.32 - (np.abs(u) + np.abs(v))) * period * 0.8, 0, 1)
        dots = np.clip((0.12 - np.hypot((xs % 1) - 0.5, (ys % 1) - 0.5)) * period, 0, 1)
    else:
        angle = np.arctan2(v, u)
        radius = np.hypot(u, v)
        shape = np.clip((0.22 + 0.08 * np.cos(5 * angle) - radius) * period, 0, 1)
        dots = np.clip((0.07 - np.hypot(xs % 1 - 0.0, ys % 1 - 0.0)) * period, 0, 1)
    grain = 0.04 * fractal_noise(size, seed, 0.8)[..., None]
    image = ground * (1 - shape[..., None]) + ink * shape[..., None]
    image = image * (1 - dots[..., None]) + accent * dots[..., None]
    return np.clip(image + grain, 0, 1)


def bricks(size: int, seed: int) -> np.ndarray:
    """A brick wall, each brick its own shade, with mortar and grain; float RGB."""
    rng = np.random.default_rng(seed)
    height, width = size / 14, size / 6
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    row = np.floor(ys / height)
    shifted = xs + (row % 2) * width / 2
    column = np.floor(shifted / width)
    shade = rng.uniform(0.75, 1.15, (int(row.max()) + 2, int(column.max()) + 2))[row.astype(int), column.astype(int)]
    mortar = ((ys % height) < 3) | ((shifted % width) < 3)
    brick = np.array([0.62, 0.27, 0.18]) * shade[..., None]
    image = np.where(mortar[..., None], np.array([0.78, 0.76, 0.70]), brick)
    return np.clip(image + 0.05 * fractal_noise(size, seed, 1.0)[..., None], 0, 1)


def foliage(size: int, seed: int) -> np.ndarray:
    """Dense leaves: fractal noise in greens, with bright and dark flecks; float RGB."""
    coarse, fine = fractal_noise(size, seed, 1.3), fractal_noise(size, seed + 1, 0.5)
    light = np.clip(0.45 + 0.18 * coarse + 0.12 * fine, 0, 1)[..., None]
    return np.clip(light * np.array([0.45, 0.85, 0.35]) + 0.1 * (fine > 1.6)[..., None], 0, 1)


def drawn(size: int, draw, angle: float = 0.0, centre: tuple[float, float] = (0.5, 0.5),
          scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A shape drawn by ``draw(ImageDraw, side)`` on a transparent square, turned by ``angle`` degrees, scaled and
    placed with its middle at ``centre`` (fractions of the frame): ``(H, W, 3)`` colour and ``(H, W, 1)`` coverage."""
    side = size * OVERSAMPLE
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw(ImageDraw.Draw(layer), side)
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
    if scale != 1.0:
        scaled = round(side * scale)
        layer = layer.resize((scaled, scaled), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    corner = (round(centre[0] * side - layer.width / 2), round(centre[1] * side - layer.height / 2))
    canvas.alpha_composite(layer, corner)
    array = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), np.float64) / 255
    return array[..., :3], array[..., 3:]


def figure(draw: ImageDraw.ImageDraw, side: int) -> None:
    """Head and shoulders with a patterned shirt, hair, eyes and a mouth."""
    s = side / 100
    draw.ellipse((22 * s, 62 * s, 78 * s, 118 * s), fill=(40, 70, 140, 255))  # shoulders
    for i in range(6):  # the shirt's stripes
        x = (26 + 9 * i) * s
        draw.line((x, 66 * s, x - 6 * s, 100 * s), fill=(235, 200, 60, 255), width=round(2 * s))
    draw.rectangle((43 * s, 52 * s, 57 * s, 66 * s), fill=(224, 172, 140, 255))  # neck
    draw.ellipse((33 * s, 20 * s, 67 * s, 60 * s), fill=(232, 182, 150, 255))  # face
    draw.chord((31 * s, 15 * s, 69 * s, 45 * s), 180, 360, fill=(70, 40, 25, 255))  # hair
    for x in (42, 58):
        draw.ellipse(((x - 3) * s, 35 * s, (x + 3) * s, 40 * s), fill=(255, 255, 255, 255))
        draw.ellipse(((x - 1.5) * s, 36 * s, (x + 1.5) * s, 39.5 * s), fill=(30, 30, 30, 255))
    draw.arc((43 * s, 42 * s, 57 * s, 53 * s), 20, 160, fill=(150, 50, 50, 255), width=round(1.5 * s))


def toy(draw: ImageDraw.ImageDraw, side: int) -> None:
    """A toy robot: a box body with dials, a head with eyes and an antenna."""
    s = side / 100
    draw.rounded_rectangle((32 * s, 45 * s, 68 * s, 80 * s), radius=4 * s, fill=(200, 60, 50, 255))
    draw.rounded_rectangle((38 * s, 22 * s, 62 * s, 43 * s), radius=3 * s, fill=(180, 180, 195, 255))
    draw.line((50 * s, 22 * s, 50 * s, 13 * s), fill=(60, 60, 60, 255), width=round(2 * s))
    draw.ellipse((47 * s, 10 * s, 53 * s, 16 * s), fill=(250, 220, 40, 255))
    for x in (44, 56):
        draw.ellipse(((x - 3) * s, 29 * s, (x + 3) * s, 35 * s), fill=(30, 200, 230, 255))
    for i, colour in enumerate(((250, 220, 40, 255), (40, 160, 70, 255), (255, 255, 255, 255))):
        draw.ellipse(((38 + 9 * i) * s, 52 * s, (44 + 9 * i) * s, 58 * s), fill=colour)
    draw.rectangle((38 * s, 64 * s, 62 * s, 74 * s), fill=(60, 60, 70, 255))
    for leg in (36, 56):
        draw.rectangle((leg * s, 80 * s, (leg + 8) * s, 92 * s), fill=(90, 90, 100, 255))


def composed(ground: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``layers`` (colour, coverage) over ``ground``, first to last: uint8."""
    image = ground
    for colour, coverage in layers:
        image = image * (1 - coverage) + colour * coverage
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def turn_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The figure turns 12 degrees, steps 8 % aside and comes 5 % closer; the wallpaper behind it changed."""
    first = wallpaper(size, size / 9, "diamond", ((232, 220, 196), (150, 60, 70), (40, 90, 80)), seed=11)
    second = wallpaper(size, size / 7, "flower", ((205, 222, 232), (50, 80, 150), (200, 150, 40)), seed=12)
    return (composed(first, [drawn(size, figure, 0.0, (0.46, 0.52))]),
            composed(second, [drawn(size, figure, -12.0, (0.54, 0.50), 1.05)]))


def grounds_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The toy in one place, on leaves and then on bricks."""
    return (composed(foliage(size, 21), [drawn(size, toy, 0.0, (0.5, 0.52), 0.9)]),
            composed(bricks(size, 25), [drawn(size, toy, 0.0, (0.5, 0.52), 0.9)]))


def viewpoint_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Three layers at three depths, seen from a camera moved sideways: the near one moves most."""
    def scene(shift: float) -> np.ndarray:
        far = np.roll(wallpaper(size, size / 10, "diamond", ((220, 214, 200), (90, 110, 150), (160, 70, 60)), 31),
                      round(shift * 0.3 * size), axis=1)
        pillar = _box(size, (0.30 + 0.6 * shift, 0.1, 0.46 + 0.6 * shift, 1.0), foliage(size, 32) * 0.9)
        crate = _box(size, (0.52 + shift, 0.55, 0.80 + shift, 0.92), bricks(size, 35) * np.array([0.9, 1.2, 1.4]))
        return composed(far, [pillar, crate])

    return scene(0.0), scene(-0.08)


def _box(size: int, corners: tuple[float, float, float, float], texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A textured rectangle (``corners`` as left, top, right, bottom fractions), antialiased: colour, coverage."""
    ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size
    left, top, right, bottom = corners
    inside = [np.clip((edge - near) * size + 0.5, 0, 1) for near, edge in ((left, xs), (xs, right), (top, ys),
                                                                            (ys, bottom))]
    return np.clip(texture, 0, 1), np.prod(inside, axis=0)[..., None]


def landscapes_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two unrelated landscapes: rolling green hills under a blue sky; dry ridges under an evening sky."""
    xs = np.arange(size) / size
    ys = (np.arange(size) / size)[:, None]

    def landscape(horizon, sky_top, sky_bottom, near, far, seed):
        sky = np.asarray(sky_top) + (np.asarray(sky_bottom) - np.asarray(sky_top)) * ys[..., None]
        clouds = np.clip(fractal_noise(size, seed, 1.6) - 0.6, 0, 1)[..., None] * 0.5
        image = np.clip(sky.repeat(size, axis=1) + clouds * (ys < 0.5)[..., None], 0, 1)
        texture = 0.85 + 0.2 * fractal_noise(size, seed + 1, 0.9)[..., None]
        for layer, (line, colour) in enumerate(((horizon[0], far), (horizon[1], near))):
            coverage = np.clip((ys - line[None, :]) * size, 0, 1)[..., None]
            shade = np.asarray(colour) * texture * (0.9 + 0.25 * layer * ys[..., None])
            image = image * (1 - coverage) + shade * coverage
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    green = (0.45 + 0.08 * np.sin(2 * math.pi * (1.3 * xs + 0.1)), 0.62 + 0.07 * np.sin(2 * math.pi * (2.1 * xs)))
    ridges = (0.35 + 0.12 * np.abs(np.sin(2 * math.pi * (0.9 * xs + 0.3))), 0.70 - 0.10 * np.sin(2 * math.pi * 3 * xs))
    return (landscape(green, (0.35, 0.55, 0.90), (0.75, 0.85, 0.95), (0.30, 0.55, 0.20), (0.40, 0.55, 0.45), 41),
            landscape(ridges, (0.30, 0.20, 0.45), (0.95, 0.60, 0.35), (0.55, 0.40, 0.25), (0.45, 0.35, 0.40), 43))


PAIRS = {"turn": turn_pair, "grounds": grounds_pair, "viewpoint": viewpoint_pair, "landscapes": landscapes_pair}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=384, help="side of the drawn pairs, in pixels")
    parser.add_argument("--pairs", nargs="+", choices=[*PAIRS, "demo"], default=[*PAIRS, "demo"])
    parser.add_argument("--photos", action="store_true", help="the pairs that morph well instead (see above)")
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS))
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--sheets", type=Path, help="write a contact sheet per pair into this folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--options", default="", help="more options for every `diffmorph morph`, one string")
    add_record_flag(parser)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        generated = {name: demo_pair() if name == "demo" else PAIRS[name](args.size) for name in args.pairs}
        if args.photos:
            from compare_objectives import photo_pairs  # it imports compare_modes: not at the top

            generated = {"textured": textured_pair(), "moved": moved_pair(), **photo_pairs()}
        for name, a, b in pair_files(None, folder, generated):
            tiles = []
            for start in args.starts:
                options = ["--align", start, *args.options.split()]
                report, frames = morph_frames(a, b, folder / f"{name}_{start}", options, args)
                rows.append((name, start, report))
                picked = [frames[round(t * (len(frames) - 1))] for t in SHEET_TIMES]
                tiles.append([(f"{name}, {start}, t = {t:.2f}", np.asarray(Image.open(p).convert("RGB")))
                              for t, p in zip(SHEET_TIMES, picked, strict=True)])
            if args.sheets:
                save_sheet(tiles, args.sheets / f"starts_{name}.png", tile_width=200)
            print(f"  done: {name}", file=sys.stderr)

    with recorded("Each start where the images do not correspond", args.record):
        print_header(args.device)
        drawn = "the pairs that morph well" if args.photos else f"pairs drawn at {args.size} px (demo: its own size)"
        print(f"{args.frames} frames as PNG, {drawn}; "
              f"options: --align START {args.options}".rstrip())
        print()
        print("| pair | start | mid-frame detail | pacing CV | largest / median | fidelity A→B / B→A dB "
              "| perceptual path | its CV | largest / median | warp melt % |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, start, r in rows:
            print(f"| {name} | {start} | {r.mid_frame_detail:.3f} | {r.pacing_cv:.3f} | "
                  f"{r.pacing_max_over_median:.2f} | {r.fidelity_a_to_b_db:.2f} / {r.fidelity_b_to_a_db:.2f} | "
                  f"{_figure(r.perceptual_path)} | {_figure(r.perceptual_step_cv)} | "
                  f"{_figure(r.perceptual_max_over_median, 2)} | {r.warp_melt:.3f} |")


def _figure(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
