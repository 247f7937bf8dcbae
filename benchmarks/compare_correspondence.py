"""How far the fitted correspondence is from the truth, on a real stereo pair with known disparity.

Double images in the middle of a morph are where the two warps disagree with the scene: content of A
carried to one place, the same content of B to another. A rectified stereo pair says where every
pixel of the left image shows in the right one (``x - disparity``, same row), so the fitted A->B
correspondence (the forward flow ``--format flow`` writes) can be compared with it pixel by pixel.
Each way of starting the fit (``--align none``, the original's; ``global``; ``local``; ``auto``, the
default) is fitted with the default settings, and the table gives the end-point error (the distance in
pixels between the fitted and the true correspondence) over the pixels with a known disparity: its mean,
its median and the share above 3 px, with the fit's time and fidelity.

The pair: by default scikit-image's "motorcycle" images (Middlebury 2014, 741 x 500, disparity 7-60 px),
which come inside its wheel where scikit-image is installed (``pip install scikit-image``; nothing is
downloaded); or your own rectified pair and its disparity of the left image (``.npy`` or ``.npz``, in
pixels, NaN or inf where unknown).

    python benchmarks/compare_correspondence.py
    python benchmarks/compare_correspondence.py --pair left.png right.png disparity.npy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import diffmorph
from diffmorph.evaluate import fidelity as fidelity_of
from diffmorph.io.flow import forward_flows
from report import add_record_flag, print_header, recorded

STARTS = {"none": "none (original)", "global": "global", "local": "local", "auto": "auto (default)"}


def bundled_pair() -> tuple[Path, Path, Path]:
    """scikit-image's motorcycle pair and its disparity, from the installed package."""
    try:
        import skimage
    except ImportError:
        sys.exit("scikit-image is not installed: pip install scikit-image, or give --pair LEFT RIGHT DISPARITY")
    data = Path(skimage.__file__).parent / "data"
    paths = data / "motorcycle_left.png", data / "motorcycle_right.png", data / "motorcycle_disp.npz"
    if not all(path.exists() for path in paths):
        sys.exit(f"scikit-image {skimage.__version__} has no motorcycle pair; give --pair LEFT RIGHT DISPARITY")
    return paths


def load_disparity(path: Path) -> np.ndarray:
    loaded = np.load(path)
    return np.asarray(loaded[loaded.files[0]] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded, np.float64)


def end_point_errors(flow: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Distances in pixels between the fitted forward flow ``(H, W, 2)`` and the true one, where it is known.

    >>> disparity = np.array([[2.0, np.nan]])
    >>> end_point_errors(np.array([[[-2.0, 0.0], [5.0, 5.0]]]), disparity).tolist()
    [0.0]
    """
    known = np.isfinite(disparity)
    return np.hypot(flow[..., 0] + disparity, flow[..., 1])[known]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=3, type=Path, metavar=("LEFT", "RIGHT", "DISPARITY"),
                        help="your own rectified pair and the left image's disparity in pixels")
    parser.add_argument("--device", default="cpu")
    add_record_flag(parser)
    args = parser.parse_args()
    left, right, disparity_file = args.pair or bundled_pair()
    disparity = load_disparity(disparity_file)

    with recorded("Correspondence against a stereo pair's true disparity", args.record):
        print_header(args.device)
        known = disparity[np.isfinite(disparity)]
        print(f"pair: {left.name} -> {right.name}, disparity {known.min():.0f}-{known.max():.0f} px, known at "
              f"{100 * known.size / disparity.size:.0f} % of the pixels\n")
        print("| start | bent | fit s | end-point error mean px | median px | above 3 px | fidelity A→B / B→A dB |")
        print("|---|---|---|---|---|---|---|")
        for align, label in STARTS.items():
            result = diffmorph.morph([left, right], align=align, device=args.device)
            renderer = result.renderer()
            if renderer.a.shape[-2:] != disparity.shape:
                sys.exit(f"the disparity is {disparity.shape[1]} x {disparity.shape[0]}, the images "
                         f"{renderer.a.shape[-1]} x {renderer.a.shape[-2]}: give the left image's disparity")
            segment = result.segments[0]
            height, width = disparity.shape
            errors = end_point_errors(forward_flows(segment.maps, result.config.warp_scale, height, width)["a_to_b"],
                                      disparity)
            fidelity = fidelity_of(renderer)
            print(f"| {label} | {'yes' if segment.bent else 'no'} | {segment.fit_seconds:.1f} | {errors.mean():.2f} | "
                  f"{np.median(errors):.2f} | {100 * (errors > 3).mean():.1f} % | "
                  f"{fidelity['a_to_b_psnr']:.2f} / {fidelity['b_to_a_psnr']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
