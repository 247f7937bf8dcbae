"""Compare the ways a fit can start and what it minimises: double images in the middle, and fidelity.

Each pair is morphed five times with the default sharp mode, PNG frames, every fit's maps refined as by
default (``--refine``): the original's start and objective (``--align none --objective classic``),
``--align global`` (the warp starts from the move of the whole picture, where one is found), the same
with ``--objective coarse-to-fine``, ``--align local`` (that move, bent region by region before the fit)
and ``--align subject`` (the pair's one subject carried from its place in A to its place in B, where
each image has one; else as global). The default, ``--align auto``, takes the global, the local or the
subject start per pair; the table says which. Every result goes through ``diffmorph.evaluate``, the same
code as ``diffmorph eval``. One more figure measures double images directly: the *halfway alignment*,
the correlation of A's and B's structure (a 3-24 px band at 512 px) after each is moved halfway by its
warp as the sharp frames move it (``Renderer.layers``). Those two layers make the middle frame: near 1
they coincide; near 0 the content they share shows twice (or they share none).
Prints a table with the machine, date and command, and writes a contact sheet of the middle frames.

Pairs, all generated (nothing is downloaded): "moved", a photo-like scene and the same scene shot
from elsewhere (shifted by 12 % and 6 % of the frame, 10 % larger, turned by 5 degrees, warmer);
"bent", the same scene bent by a smooth random field (the ball changes shape) and cooled; the
built-in demo pair; and the "textured" pair of ``compare_modes.py`` (a ball that moves a third of the
frame over ground that changes). Or your own with ``--images``, or with ``--photos`` six pairs made
from photos that come inside scikit-image's and matplotlib's wheels where they are installed (nothing is
downloaded; see :func:`photo_pairs`).

    python benchmarks/compare_objectives.py --sheet docs/objectives.png
    python benchmarks/compare_objectives.py --photos
    python benchmarks/compare_objectives.py --images a.jpg b.jpg
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from compare_modes import (
    WARM,
    bend,
    bent_pair,
    morph_frames,
    moved_pair,
    pair_files,
    parse_arguments,
    recoloured,
    save_sheet,
    textured_pair,
)
from diffmorph.demo import demo_pair
from diffmorph.model import MAP_SIZE
from diffmorph.ops import gaussian_blur, luma
from diffmorph.pipeline import MorphResult
from diffmorph.start import starting_maps
from report import print_header, recorded

FITS = {"none, classic": ["--align", "none", "--objective", "classic"],  # label "start, objective": options
        "global, classic": ["--align", "global", "--objective", "classic"],
        "global, coarse-to-fine": ["--align", "global", "--objective", "coarse-to-fine"],
        "local, classic": ["--align", "local", "--objective", "classic"],
        "subject, classic": ["--align", "subject", "--objective", "classic"]}


def auto_start(maps_file: Path) -> str:
    """Which start the default ``--align auto`` takes for the pair of a maps file: "global", "local" or
    "subject"."""
    result = MorphResult.load(maps_file)
    start = starting_maps(*result.images, "auto", result.config.warp_scale, MAP_SIZE)
    return "local" if start.bent else "subject" if start.subject else "global"


def halfway_alignment(maps_file: Path) -> float:
    """Correlation of A's and B's structure after each is moved halfway as the frames move it (1: no double
    images)."""
    result = MorphResult.load(maps_file)
    height, width = result.images[0].shape[-2:]
    grey = luma(result.renderer().layers(0.5))  # (2, 1, H, W)
    scale = max(height, width) / 512
    band = gaussian_blur(grey, 3 * scale) - gaussian_blur(grey, 24 * scale)
    band = band.flatten(1) - band.flatten(1).mean(dim=1, keepdim=True)
    return float((band[0] * band[1]).sum() / (band[0].norm() * band[1].norm()))


def photo_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs made from scikit-image's photos and one of matplotlib's, ``(H, W, 3)`` uint8 each.

    "photo, moved less" and "photo, moved": the astronaut photo (512 x 512, public domain) and the same
    photo enlarged by 10 % about its top-left corner, turned by 5 degrees, shifted so that its centre moves
    by 8 % and 3 % of the frame (right and down) or by 15 % and 7 %, and warmed. "photo, bent": the photo
    bent by a bicubic field of 4 x 4 random displacements (standard deviation 6 % of the frame), warmed.
    "photo, mirrored": the photo and its mirror image (the face moves across the frame and is not quite
    symmetric: a stand-in for two faces in two poses). "stereo": the Middlebury 2014 motorcycle pair
    (741 x 500), the left and the right view of one scene, near parts moving up to 60 px against 7 px for
    the far wall (see compare_correspondence.py). "faces": two people, head and shoulders, 384 x 384:
    Grace Hopper (matplotlib's sample photo, public domain) and the astronaut, Eileen Collins, cropped so
    that their faces sit about where a user's crops would put them (hers larger and further left).
    """
    try:
        from matplotlib import cbook
        from skimage import data
    except ImportError:
        sys.exit("--photos needs scikit-image and matplotlib (for a photo each comes with): "
                 "pip install scikit-image matplotlib")
    photo = data.astronaut()
    size = photo.shape[0]
    pairs = {}
    for name, (right, down) in (("photo, moved less", (0.08, 0.03)), ("photo, moved", (0.15, 0.07))):
        angle, scale = math.radians(5.0), 1.1
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        centre = size / 2
        # B(p) = A(M^-1 (p - t)), M = scale * turn about the top-left corner; t puts the centre where wanted.
        tx = centre + right * size - (cos * centre - sin * centre)
        ty = centre + down * size - (sin * centre + cos * centre)
        inverse = np.linalg.inv(np.array([[cos, -sin], [sin, cos]]))
        # PIL's affine transform maps each output pixel to the input pixel it shows.
        coefficients = (*inverse[0], -(inverse[0] @ (tx, ty)), *inverse[1], -(inverse[1] @ (tx, ty)))
        moved = Image.fromarray(photo).transform((size, size), Image.Transform.AFFINE, coefficients,
                                                 resample=Image.Resampling.BICUBIC, fillcolor=(40, 36, 30))
        pairs[name] = photo, recoloured(np.asarray(moved), WARM)
    pairs["photo, bent"] = photo, bend(photo, seed=5, spread=0.06, colour=WARM)
    pairs["photo, mirrored"] = photo, np.ascontiguousarray(photo[:, ::-1])
    pairs["stereo"] = data.stereo_motorcycle()[:2]
    with cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = Image.open(file).convert("RGB").crop((50, 95, 470, 515))  # (left, top, right, bottom)
    collins = Image.fromarray(photo).crop((78, 0, 378, 300))
    pairs["faces"] = tuple(np.asarray(face.resize((384, 384), Image.Resampling.LANCZOS)) for face in (hopper, collins))
    return pairs


def main() -> None:
    args = parse_arguments(__doc__, "write the contact sheet of middle frames here (PNG)",
                           "the pairs made from scikit-image's and matplotlib's photos instead (see photo_pairs)")

    rows, tiles, starts = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        generated = photo_pairs() if args.photos else {"moved": moved_pair(), "bent": bent_pair(),
                                                       "demo": demo_pair(), "textured": textured_pair()}
        pairs = pair_files(args.images, folder, generated)
        for name, a, b in pairs:
            row = []
            for number, (fit, options) in enumerate(FITS.items()):
                out = folder / f"{name}_{number}"
                report, frames = morph_frames(a, b, out, options, args)
                rows.append((name, fit, report, halfway_alignment(out / "maps.safetensors")))
                middle = np.asarray(Image.open(frames[(len(frames) - 1) // 2]).convert("RGB"))
                row.append((f"{name}: {fit}", middle))
            tiles.append(row)
            starts.append(f"{name} {auto_start(folder / f'{name}_0' / 'maps.safetensors')}")
            print(f"  done: {name}", file=sys.stderr)

    with recorded("Starts and objectives: halfway alignment and quality", args.record):
        print_header(args.device)
        print(f"{args.frames} frames as PNG; default settings (sharp mode, even pacing) but for the start and "
              f"objective")
        print()
        print("| pair | start, objective | halfway alignment | fidelity A→B / B→A dB | mid-frame detail | pacing CV "
              "| largest / median step | endpoint error A / B |")
        print("|---|---|---|---|---|---|---|---|")
        for name, fit, r, alignment in rows:
            print(f"| {name} | {fit} | {alignment:.3f} | {r.fidelity_a_to_b_db:.2f} / {r.fidelity_b_to_a_db:.2f} | "
                  f"{r.mid_frame_detail:.3f} | {r.pacing_cv:.3f} | {r.pacing_max_over_median:.2f} | "
                  f"{r.endpoint_error_first:.2f} / {r.endpoint_error_last:.2f} |")
        print()
        print(f"The default (--align auto) starts as: {', '.join(starts)}.")
    if args.sheet:
        save_sheet(tiles, args.sheet, tile_width=300)


if __name__ == "__main__":
    main()
