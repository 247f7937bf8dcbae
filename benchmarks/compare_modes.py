"""Compare the original method with diffmorph's defaults using ``diffmorph eval``, side by side.

Each pair is morphed three times to PNG frames: as the original did (``diffmorph morph --mode classic
--align none --refine 0``: classic render, linear pacing, the warp fitted from nothing, the network's maps
as they are); the same with the maps refined as by default ("classic, refined": what the refinement alone
changes); and with the defaults (sharp render, even pacing, the warp started as ``--align auto`` chooses:
from the move of the whole picture where there is one, bent where that makes the pictures agree, the
subject carried where both images have one; the maps refined).
Both frame folders go through ``diffmorph.evaluate``, the same code as ``diffmorph eval``. Prints a
table with the machine, date and command, and writes a contact sheet of the frames at t = 0.25, 0.5
and 0.75 for each pair and method.

Pairs: the built-in demo pair; a generated photo-like pair (fine sand and moss textures under a shaded
ball that moves and grows); and "moved", a photo-like scene and the same scene shot from elsewhere
(shifted by 12 % and 6 % of the frame, 10 % larger, turned by 5 degrees, warmer). Or your own with
``--images``, or with ``--photos`` the pairs made from photos of ``compare_objectives.py`` (where
scikit-image and matplotlib are installed). Nothing is downloaded.

    python benchmarks/compare_modes.py --sheet docs/modes.png
    python benchmarks/compare_modes.py --photos
    python benchmarks/compare_modes.py --images a.jpg b.jpg
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffmorph.demo import demo_pair
from diffmorph.evaluate import EvalReport, evaluate
from diffmorph.io.pictures import contact_sheet
from diffmorph.ops import warp
from report import add_record_flag, print_header, recorded

SHEET_TIMES = (0.25, 0.5, 0.75)
SHEET_METHODS = ("classic", "default")  # the refined classic frames look like the classic ones
WARM = (1.06, 0.97, 0.85)  # how the second images of the moved pairs are recoloured, as a warmer shot would be
# Options of `diffmorph morph`. "classic, refined" is the original's fit with the maps refined as by default: what
# the refinement alone changes.
METHODS = {"classic": ["--mode", "classic", "--align", "none", "--refine", "0"],
           "classic, refined": ["--mode", "classic", "--align", "none"], "default": []}


def fractal_noise(size: int, seed: int, slope: float) -> np.ndarray:
    """``(size, size)`` noise with a ``1 / f**slope`` spectrum, zero mean and unit deviation."""
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(size)
    radius = np.hypot(freq[:, None], freq[None, :])
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / radius**slope
    noise = np.fft.ifft2(spectrum).real
    return (noise - noise.mean()) / noise.std()


def ball(size: int, centre: tuple[float, float], radius: float, colour: tuple[float, float, float],
         stripes: float) -> tuple[np.ndarray, np.ndarray]:
    """A striped ball lit from the top left: ``(H, W, 3)`` colour and ``(H, W, 1)`` coverage."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    dy, dx = (ys - centre[0]) / radius, (xs - centre[1]) / radius
    inside = dx**2 + dy**2
    depth = np.sqrt(np.clip(1.0 - inside, 0.0, 1.0))
    light = np.clip(-0.5 * dx - 0.6 * dy + 0.6 * depth, 0.0, 1.0) * 0.8 + 0.2
    pattern = 0.75 + 0.25 * np.sign(np.sin(stripes * (dx + 0.4 * dy)))
    shaded = np.asarray(colour) * (light * pattern)[..., None] + 0.5 * light[..., None] ** 12
    coverage = np.clip((1.0 - inside) * radius * size / 2.0, 0.0, 1.0)[..., None]  # about 1 px of antialiasing
    return shaded, coverage


def textured_pair(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Two photo-like scenes with fine texture and real motion, ``(H, W, 3)`` uint8 each."""
    sand = 0.62 + 0.06 * fractal_noise(size, 1, 1.0)[..., None] + 0.03 * fractal_noise(size, 2, 0.3)[..., None]
    sand = sand * np.array([1.0, 0.86, 0.64])
    moss = 0.32 + 0.10 * fractal_noise(size, 3, 1.2)[..., None] + 0.05 * fractal_noise(size, 4, 0.4)[..., None]
    moss = moss * np.array([0.55, 0.95, 0.45])
    scenes = []
    for ground, centre, radius, colour, stripes in ((sand, (0.42, 0.34), 0.18, (0.85, 0.2, 0.15), 9.0),
                                                    (moss, (0.56, 0.62), 0.24, (0.95, 0.8, 0.2), 7.0)):
        shaded, coverage = ball(size, centre, radius, colour, stripes)
        shadow = ball(size, (centre[0] + 0.05, centre[1] + 0.04), radius, (0, 0, 0), 0.0)[1] * 0.35
        scene = ground * (1.0 - shadow) * (1.0 - coverage) + shaded * coverage
        scenes.append((np.clip(scene, 0.0, 1.0) * 255).round().astype(np.uint8))
    return scenes[0], scenes[1]


def moved_pair(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like scene, and the same scene moved, enlarged, turned and warmed: ``(H, W, 3)`` uint8."""
    scene = Image.fromarray(textured_pair(size)[0])
    angle, scale, shift = math.radians(5.0), 1.1, (0.12 * size, 0.06 * size)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    centre = size / 2
    # PIL's affine transform maps each output pixel to the input pixel it shows.
    moved = scene.transform(scene.size, Image.Transform.AFFINE,
                            (cos, -sin, centre - cos * (centre + shift[0]) + sin * (centre + shift[1]),
                             sin, cos, centre - sin * (centre + shift[0]) - cos * (centre + shift[1])),
                            resample=Image.Resampling.BICUBIC, fillcolor=(40, 36, 30))
    return np.asarray(scene), recoloured(np.asarray(moved), WARM)


def recoloured(image: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
    """``image`` (uint8) with each channel scaled by ``factors``: uint8."""
    return np.clip(np.asarray(image, np.float64) * factors, 0, 255).round().astype(np.uint8)


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "diffmorph", *args, "-q"], check=True)


def bent_pair(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like scene, and the same scene bent by a smooth field and cooled: ``(H, W, 3)`` uint8.

    No one move explains the bend (the ball changes shape, the ground flows): a subject that changes
    shape, such as two faces or two poses, in a form that can be generated."""
    scene = textured_pair(size)[0]
    return scene, bend(scene, seed=7, spread=0.05, colour=(0.9, 0.98, 1.08))


def bend(image: np.ndarray, seed: int, spread: float, colour: tuple[float, float, float]) -> np.ndarray:
    """Square ``image`` (uint8) bent by a bicubic field of 4 x 4 random displacements (standard deviation
    ``spread`` of the frame, drawn from ``seed``), each channel scaled by ``colour``: uint8."""
    size = image.shape[0]
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    control = torch.from_numpy(np.random.default_rng(seed).normal(0.0, spread * size, (1, 2, 4, 4))).float()
    field = torch.nn.functional.interpolate(control, size=(size, size), mode="bicubic", align_corners=True)
    bent = (warp(tensor, field)[0].permute(1, 2, 0).numpy() + 1) * 127.5 * np.array(colour)
    return np.clip(bent, 0, 255).round().astype(np.uint8)


def morph_frames(a: Path, b: Path, out: Path, options: list[str],
                 args: argparse.Namespace) -> tuple[EvalReport, list[Path]]:
    """``diffmorph morph`` of one pair to PNG frames in ``out`` with ``options``; its eval report and frames."""
    run(["morph", str(a), str(b), "-o", str(out), *options, "--format", "frames", "--frames", str(args.frames),
         "--device", args.device])
    report = evaluate(out / "frames", a, b, maps_file=out / "maps.safetensors")
    return report, sorted((out / "frames").iterdir())


def parse_arguments(doc: str, sheet_help: str, photos_help: str | None = None) -> argparse.Namespace:
    """The options every comparison takes: your own pair, frames, the sheet and the device (and, with
    ``photos_help``, ``--photos``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs=2, type=Path, metavar=("A", "B"), help="your own pair instead")
    if photos_help:
        parser.add_argument("--photos", action="store_true", help=photos_help)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--sheet", type=Path, help=sheet_help)
    parser.add_argument("--device", default="cpu")
    add_record_flag(parser)
    return parser.parse_args()


def pair_files(images: list[Path] | None, folder: Path,
               generated: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[str, Path, Path]]:
    """``(name, A, B)`` paths: your pair, or the generated ones saved as PNG in ``folder``."""
    if images:
        return [("your pair", *images)]
    pairs = []
    for name, (a, b) in generated.items():
        if a.dtype != np.uint8:
            a, b = ((image * 255).round().astype(np.uint8) for image in (a, b))
        paths = folder / f"{name}_a.png", folder / f"{name}_b.png"
        for image, path in zip((a, b), paths, strict=True):
            Image.fromarray(image).save(path)
        pairs.append((name, *paths))
    return pairs


def save_sheet(tiles: list[list[tuple[str, np.ndarray]]], path: Path, tile_width: int) -> None:
    """One contact-sheet row per list of labelled frames, stacked into one PNG."""
    sheets = [contact_sheet(row, tile_width=tile_width) for row in tiles]
    canvas = Image.new("RGB", (max(s.width for s in sheets), sum(s.height for s in sheets)), "white")
    top = 0
    for sheet in sheets:
        canvas.paste(sheet, (0, top))
        top += sheet.height
    canvas.save(path)
    print(f"\nsheet: {path}")


def main() -> None:
    args = parse_arguments(__doc__, "write the side-by-side contact sheet here (PNG)",
                           "the pairs made from scikit-image's and matplotlib's photos instead (see "
                           "compare_objectives.photo_pairs)")

    rows, tiles = [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.photos:
            from compare_objectives import photo_pairs  # it imports this module: not at the top

            generated = photo_pairs()
        else:
            generated = {"demo": demo_pair(), "textured": textured_pair(), "moved": moved_pair()}
        pairs = pair_files(args.images, folder, generated)
        for name, a, b in pairs:
            for mode, options in METHODS.items():
                report, frames = morph_frames(a, b, folder / f"{name}_{mode}", options, args)
                rows.append((name, mode, report))
                if mode not in SHEET_METHODS:
                    continue
                picked = [frames[round(t * (len(frames) - 1))] for t in SHEET_TIMES]
                tiles.append([(f"{name}, {mode}, t = {t:.2f}", np.asarray(Image.open(p).convert("RGB")))
                              for t, p in zip(SHEET_TIMES, picked, strict=True)])
            print(f"  done: {name}", file=sys.stderr)

    with recorded("The original method against the defaults", args.record):
        print_header(args.device)
        print(f"{args.frames} frames as PNG; " + "; ".join(f"{mode}: {' '.join(options) or 'no options'}"
                                                      for mode, options in METHODS.items()))
        print()
        print("| pair | method | endpoint error A / B | mid-frame detail | pacing CV | largest / median step "
              "| fidelity A→B / B→A dB |")
        print("|---|---|---|---|---|---|---|")
        for name, mode, r in rows:
            print(f"| {name} | {mode} | {r.endpoint_error_first:.2f} / {r.endpoint_error_last:.2f} | "
                  f"{r.mid_frame_detail:.3f} | {r.pacing_cv:.3f} | {r.pacing_max_over_median:.2f} | "
                  f"{r.fidelity_a_to_b_db:.2f} / {r.fidelity_b_to_a_db:.2f} |")
    if args.sheet:
        save_sheet(tiles, args.sheet, tile_width=300)


if __name__ == "__main__":
    main()
