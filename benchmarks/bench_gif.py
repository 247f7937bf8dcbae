"""morph.gif against the frames it was made from, for each GIF palette.

For each pair one ``diffmorph morph`` writes lossless PNG frames; then diffmorph's own GIF writer makes morph.gif
from those frames with each palette, timed (the best of three): ``frame`` (256 colours fitted to each frame, the
default), ``smooth`` (fitted to each frame by median cut), ``clip`` (one palette for the whole morph) and, for
comparison, the clip palette as it was before
(median cut over the two images and their mean). Both the frames and the GIF are blurred (Gaussian, sigma 1.5 px)
before they are compared, so a dither counts as the colour it averages to and a band as an error: the PSNR's mean
and least over the frames. Flicker: how much more the GIF changes from one frame to the next than the frames do
(mean absolute difference of the blurred changes, in 0-255 levels). Pairs: the demo, and "moved" from
compare_modes.py (a photo-like scene and the same scene moved, turned and warmed); with ``--photos``, the
astronaut photo and the same photo moved (compare_objectives.py, needs scikit-image and matplotlib).

    python benchmarks/bench_gif.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compare_modes import moved_pair, run
from diffmorph.demo import demo_pair
from diffmorph.io.writers import GifWriter, clip_palette
from diffmorph.ops import gaussian_blur
from report import add_record_flag, print_header, recorded

BLUR = 1.5  # px: wider than an ordered or diffused dither's pattern, narrower than a band
REPEATS = 3


def before_palette(keyframes: list[np.ndarray], side: int = 192) -> Image.Image:
    """The clip palette as it was before: median cut over small copies of the keyframes and of their means."""
    height, width = keyframes[0].shape[:2]
    scale = min(1.0, side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = [np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)) for frame in keyframes]
    means = [((first.astype(np.uint16) + second) // 2).astype(np.uint8) for first, second in pairwise(small)]
    return Image.fromarray(np.concatenate(small + means, axis=0)).quantize(256, method=Image.Quantize.MEDIANCUT)


# Each palette: how it is made from the keyframes (None: each frame its own), and whether a frame's own is smooth.
PALETTES: dict[str, tuple[Callable[[list[np.ndarray]], Image.Image | None], bool]] = {
    "frame (default)": (lambda keyframes: None, False),
    "smooth": (lambda keyframes: None, True),
    "clip": (clip_palette, False),
    "clip, before": (before_palette, False),
}


def blurred(frame: np.ndarray) -> torch.Tensor:
    return gaussian_blur(torch.from_numpy(np.asarray(frame, dtype=np.float32)).permute(2, 0, 1)[None], BLUR)


def write_gif(path: Path, frames: list[np.ndarray], palette: Image.Image | None, smooth: bool) -> float:
    """Seconds the writer took for ``frames`` (the palette's fitting included by the caller)."""
    started = time.perf_counter()
    writer = GifWriter(path, 45, palette=palette, smooth=smooth)
    for frame in frames:
        writer.add(frame)
    writer.close()
    return time.perf_counter() - started


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        decoded = []
        for index in range(gif.n_frames):
            gif.seek(index)
            decoded.append(np.asarray(gif.convert("RGB")))
        return decoded


def measure(name: str, frames: list[np.ndarray], folder: Path) -> None:
    reference = [blurred(frame) for frame in frames]
    for label, (make, smooth) in PALETTES.items():
        path = folder / f"{label}.gif"
        seconds = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            palette = make([frames[0], frames[-1]])
            seconds.append(write_gif(path, frames, palette, smooth) + time.perf_counter() - started)
        shown = [blurred(frame) for frame in gif_frames(path)]
        psnr = [float(10 * torch.log10(255.0**2 / (gif - lossless).square().mean()))
                for gif, lossless in zip(shown, reference, strict=True)]
        flicker = np.mean([float(((shown[i + 1] - shown[i]) - (reference[i + 1] - reference[i])).abs().mean())
                           for i in range(len(frames) - 1)])
        print(f"| {name} | {label} | {np.mean(psnr):.1f} / {min(psnr):.1f} | {flicker:.2f} | "
              f"{path.stat().st_size / 1e6:.2f} | {min(seconds):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", action="store_true", help="add the astronaut photo pair (see above)")
    parser.add_argument("--frames", type=int, default=100, help="frames per morph")
    parser.add_argument("--options", default="", help="more options for each `diffmorph morph`, one string")
    add_record_flag(parser)
    args = parser.parse_args()
    pairs = {"demo": tuple((image * 255).round().astype(np.uint8) for image in demo_pair()),
             "moved": moved_pair(384)}
    if args.photos:
        from compare_objectives import photo_pairs  # it imports compare_modes: not at the top
        pairs["photo, moved"] = photo_pairs()["photo, moved"]
    with tempfile.TemporaryDirectory() as temporary, recorded("GIF palettes against the lossless frames", args.record):
        print_header("cpu")
        print(f"{args.frames} frames per morph, written by diffmorph's GIF writer at the frames' own size; "
              f"blurred PSNR: sigma {BLUR} px; time: the palette and the writer, best of {REPEATS}\n")
        print("| pair | palette | blurred PSNR mean / least dB | flicker | size MB | time s |")
        print("|---|---|---|---|---|---|")
        for name, (a, b) in pairs.items():
            folder = Path(temporary) / name.replace(" ", "_").replace(",", "")
            folder.mkdir()
            Image.fromarray(a).save(folder / "a.png")
            Image.fromarray(b).save(folder / "b.png")
            run(["morph", str(folder / "a.png"), str(folder / "b.png"), "-o", str(folder / "out"),
                 "--format", "frames", "--frames", str(args.frames), *args.options.split()])
            frames = [np.asarray(Image.open(path).convert("RGB"))
                      for path in sorted((folder / "out" / "frames").iterdir())]
            measure(name, frames, folder)
            print(f"  done: {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
