"""Measuring a morph: exact endpoints, detail kept in the middle, even pacing, and the maps' fidelity.

All metrics work on 8-bit RGB frames; differences are in grey levels (0-255).

- *Endpoint error*: mean absolute difference of the first frame from A and of the last from B. A lossy animation
  (a video, a GIF, a WebP) cannot be exact: its *codec loss* is the same difference for A and for B written alone
  the way diffmorph writes that format (H.264 at the stream's own CRF where x264 recorded it), and an endpoint is
  exact when its error is within 1 of that.
- *Mid-frame detail*: energy (mean square) of the discrete 4-neighbour Laplacian of the greyscale
  middle frame after a 2x box downscale, divided by the mean of the same quantity for A and B. A
  cross-dissolve of unrelated content scores about 0.5 (its Laplacian is the average of two
  uncorrelated ones); blur scores lower; a sharp morph that moves content scores near 1.
- *Pacing*: the RMSE between consecutive frames, summarised by its coefficient of variation and by the
  largest step over the median step. Even pacing gives a CV near 0 and a ratio near 1.
- *Fidelity* (with a maps file): PSNR of A fully mapped to B against B, and of B mapped to A against A.
- *Perceptual path* (with the ``[eval]`` extra): the shift-tolerant LPIPS (:mod:`diffmorph.perceptual`) between
  consecutive frames, summed along the morph (the path's length: a morph that wanders through images that are
  neither A nor B, melts or shows two silhouettes walks further), with the steps' coefficient of variation and
  largest step over the median.
- *Warp melt* (with a maps file): how far each direction's warp departs from the best affine move (a shift, a
  zoom, a turn, a shear) of each window of the frame, in percent of the frame, averaged over the windows with
  each window weighted by how little the warped image's structure agrees with the other image there. A warp
  that follows real correspondence agrees and counts little; one that swirls or stretches a region it cannot
  match (a busy background that differs) counts in full.
- *Hint error* (with a maps file of a morph given point hints): the farthest, in pixels of the frame, that a
  hinted point of A lands from its partner on B when the maps are fully applied (either direction).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from diffmorph import ops
from diffmorph.errors import InputImageError, MapsFileError
from diffmorph.io.images import ImageSource, fit_to_frame, load_image
from diffmorph.io.readers import open_frames
from diffmorph.io.writers import WRITTEN, WriterOptions
from diffmorph.ops import MapScales, flow_from_warp_map, luma, resize, warp
from diffmorph.perceptual import MissingExtraError, PerceptualPath
from diffmorph.render import fidelity
from diffmorph.start.points import as_hints, landing_errors

LUMA = np.array(ops.LUMA)  # the greyscale of the detail metric
ENDPOINT_TOLERANCE = 1.0  # grey levels: rounding and resampling; a frame one step off a 100-frame morph is 5 or more
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers diffmorph's H.264 stands in for


def greyscale(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB to ``(H, W)`` float64 luma in grey levels."""
    return frame.astype(np.float64) @ LUMA


def laplacian_energy(frame: np.ndarray) -> float:
    """Mean square of the 4-neighbour Laplacian of the greyscale frame after a 2x box downscale (of the frame as
    it is where that would leave fewer than 3 pixels on a side).

    >>> laplacian_energy(np.full((8, 8, 3), 77, np.uint8))
    0.0
    >>> laplacian_energy(np.eye(4, dtype=np.uint8)[..., None].repeat(3, axis=2) * 100)
    100000.0
    """
    grey = greyscale(frame)
    height, width = (grey.shape[0] // 2) * 2, (grey.shape[1] // 2) * 2
    small = grey[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    if min(small.shape) < 3:
        small = grey
    if min(small.shape) < 3:
        raise InputImageError(f"frames of {frame.shape[1]} x {frame.shape[0]} pixels are too small to measure")
    centre = small[1:-1, 1:-1]
    lap = small[:-2, 1:-1] + small[2:, 1:-1] + small[1:-1, :-2] + small[1:-1, 2:] - 4.0 * centre
    return float(np.mean(lap**2))


def mean_abs_error(frame: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference in grey levels."""
    return float(np.mean(np.abs(frame.astype(np.float64) - reference.astype(np.float64))))


def rmse(first: np.ndarray, second: np.ndarray) -> float:
    """Root-mean-square difference in grey levels."""
    return float(np.sqrt(np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)))


def pacing(steps: list[float]) -> tuple[float, float]:
    """Coefficient of variation of the step sizes, and largest step over the median step.

    A sequence that never changes counts as perfectly even: (0, 1).

    >>> pacing([2.0, 2.0, 2.0])
    (0.0, 1.0)
    >>> pacing([1.0, 3.0])
    (0.5, 1.5)
    """
    values = np.asarray(steps, dtype=np.float64)
    if values.size == 0 or values.mean() == 0.0:
        return 0.0, 1.0
    median = float(np.median(values))
    ratio = float(values.max() / median) if median > 0 else float("inf")
    return float(values.std() / values.mean()), ratio


@dataclass(frozen=True)
class EvalReport:
    """The metrics of one morph; see the module docstring for their definitions."""

    frames: int
    endpoint_error_first: float
    endpoint_error_last: float
    mid_frame_detail: float | None
    pacing_cv: float
    pacing_max_over_median: float
    fidelity_a_to_b_db: float | None = None
    fidelity_b_to_a_db: float | None = None
    perceptual_path: float | None = None
    perceptual_step_cv: float | None = None
    perceptual_max_over_median: float | None = None
    warp_melt: float | None = None
    hint_error_px: float | None = None
    codec_loss_first: float | None = None
    codec_loss_last: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def table(self) -> str:
        """The metrics as a table for people: name, value and what good values are."""
        good = dict(GOOD_VALUES)
        if self.codec_loss_first is not None:  # a lossy animation: its endpoints are exact up to the codec's loss
            for name, limit in zip(("endpoint_error_first", "endpoint_error_last"), self.endpoint_limits(),
                                   strict=True):
                good[name] = f"≤ {limit:.2f} (1 beyond the codec's loss)"
        lines = [f"{'metric':<26} {'value':>9}  good values"]
        for name, value in self.to_dict().items():
            if value is not None:
                shown = f"{value:d}" if isinstance(value, int) else f"{value:.3f}"
                lines.append(f"{name:<26} {shown:>9}  {good.get(name, '')}".rstrip())
        return "\n".join(lines)

    def endpoint_limits(self) -> tuple[float, float]:
        """The largest endpoint errors of an exact morph: 1 grey level, beyond the codec's loss where it has one."""
        return (ENDPOINT_TOLERANCE + (self.codec_loss_first or 0.0),
                ENDPOINT_TOLERANCE + (self.codec_loss_last or 0.0))

    def endpoints_exact(self) -> bool:
        first, last = self.endpoint_limits()
        return self.endpoint_error_first <= first and self.endpoint_error_last <= last


@dataclass(frozen=True)
class MeltParams:
    """Windows of :func:`warp_melt` (see the module docstring)."""

    size: int = 128  # the maps and images are compared squashed to this square, as the fit sees them
    window: int = 32  # side of a window (a quarter of the frame): a region that a rigid ground moves as one
    stride: int = 16  # windows overlap by half


def warp_melt(maps: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scales: MapScales,
              params: MeltParams = MeltParams()) -> float:
    """The warps' departure from a local affine move where the images do not agree (module docstring).

    Args:
        maps: ``(16, h, w)`` raw maps of a pair, A->B then B->A.
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]``.

    Returns:
        Percent of the frame: 0 for any affine warp, whatever the images.
    """
    size, window, stride = params.size, params.window, params.stride
    warps = resize(maps.view(2, 8, *maps.shape[-2:])[:, 6:8].float(), size, size)  # (2, 2, S, S) raw
    fraction = warps * scales.warp  # displacement in fractions of the frame, both axes
    images = resize(torch.cat((a, b)).float(), size, size, antialias=True)
    carried = luma(warp(images, flow_from_warp_map(warps, scales.warp)))  # A carried onto B, B onto A
    fixed = luma(images.flip(0))  # (2, 1, S, S): what each carried image should match

    def windows(x: torch.Tensor) -> torch.Tensor:  # (2, C, S, S) -> (2, C, window**2, L)
        return F.unfold(x, window, stride=stride).view(2, x.shape[1], window * window, -1)

    # An affine field is a plane in y and x: its residual is what the window's least-squares plane misses.
    ys, xs = torch.meshgrid(torch.arange(window, dtype=torch.float32), torch.arange(window, dtype=torch.float32),
                            indexing="ij")
    design, _ = torch.linalg.qr(torch.stack((torch.ones_like(ys), ys, xs), dim=-1).view(-1, 3))  # (w*w, 3)
    flows = windows(fraction)  # (2, 2, w*w, L)
    residual = flows - design @ (design.T @ flows)
    departure = residual.square().sum(dim=1).mean(dim=1).sqrt()  # (2, L) RMS length
    x, y = windows(carried)[:, 0], windows(fixed)[:, 0]  # (2, w*w, L)
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    agreement = (x * y).sum(dim=1) / (x.square().sum(dim=1) * y.square().sum(dim=1) + 1e-6).sqrt()
    return float(((1 - agreement) / 2 * departure).mean() * 100)


def evaluate(animation: str | Path, a: ImageSource, b: ImageSource, *, maps_file: str | Path | None = None,
             fit: str = "crop", background: str = "white", perceptual: bool | None = None) -> EvalReport:
    """Measure a morph from its frames and the two input images.

    Args:
        animation: a video, an animated GIF/WebP, or a folder of frames, A first.
        a, b: the inputs. B is fitted to A's frame as ``diffmorph morph`` does (``fit``); when the
            frames are one row or column smaller than A (H.264 needs even sizes), both are cropped.
        maps_file: optional maps file, for the fidelity and warp melt metrics.
        perceptual: measure the perceptual path: True needs the ``[eval]`` extra, None measures it where that
            is installed, False never.

    Raises:
        InputImageError: unreadable inputs, or frames of another size than A.
        MissingExtraError: ``perceptual=True`` without the ``[eval]`` extra.
    """
    source = open_frames(animation)
    if source.count < 2:
        raise InputImageError(f"{animation}: {source.count} frame(s); the metrics need at least 2")
    image_a = load_image(a, background=background, label="A")
    image_b, _ = fit_to_frame(load_image(b, background=background, label="B"), image_a.shape[1],
                              image_a.shape[0], fit, background)
    levels_a, levels_b = ((x * 255.0).round().astype(np.uint8) for x in (image_a, image_b))
    middle = (source.count - 1) // 2
    path = _perceptual_path(perceptual)

    steps: list[float] = []
    first = previous = mid = None
    for index, frame in enumerate(source.frames()):
        if index == 0:
            first = frame
            levels_a, levels_b = _match_size(frame, levels_a, levels_b, animation)
        else:
            steps.append(rmse(frame, previous))
        if index == middle:
            mid = frame
        if path is not None:
            path.add(frame)
        previous = frame
    if first is None or mid is None or len(steps) < 1:
        raise InputImageError(f"{animation}: could not decode enough frames (got {len(steps) + (first is not None)})")

    cv, ratio = pacing(steps)
    losses = codec_losses(animation, [levels_a, levels_b]) or (None, None)
    report = EvalReport(
        frames=len(steps) + 1,
        endpoint_error_first=mean_abs_error(first, levels_a),
        endpoint_error_last=mean_abs_error(previous, levels_b),
        codec_loss_first=losses[0],
        codec_loss_last=losses[1],
        mid_frame_detail=_ratio(laplacian_energy(mid), (laplacian_energy(levels_a) + laplacian_energy(levels_b)) / 2),
        pacing_cv=cv,
        pacing_max_over_median=ratio,
    )
    if path is not None:
        perceptual_steps = path.finish()
        spread, largest = pacing(perceptual_steps)
        report = replace(report, perceptual_path=float(sum(perceptual_steps)), perceptual_step_cv=spread,
                         perceptual_max_over_median=largest)
    if maps_file is None:
        return report
    from diffmorph.pipeline import MorphResult

    result = MorphResult.load(maps_file)
    if len(result.segments) != 1:
        raise MapsFileError(f"maps file {maps_file} holds a chain of {len(result.segments)} segments; --maps "
                            f"measures a pair's fidelity")
    renderer = result.renderer(0, "cpu")
    measured = fidelity(renderer)
    melt = warp_melt(result.segments[0].maps, renderer.a, renderer.b, renderer.scales)
    start = result.segments[0].start
    hinted = None
    if start is not None and start.points:  # the farthest a hinted point lands from its partner at t = 1
        width, height = result.images[0].shape[-1], result.images[0].shape[-2]
        hinted = max(landing_errors(result.segments[0].maps, as_hints(start.points), result.config.warp_scale,
                                    width, height))
    return replace(report, fidelity_a_to_b_db=measured["a_to_b_psnr"], fidelity_b_to_a_db=measured["b_to_a_psnr"],
                   warp_melt=melt, hint_error_px=hinted)


def codec_losses(animation: str | Path, images: list[np.ndarray]) -> list[float] | None:
    """The mean absolute error (grey levels) of each of ``images``, ``(H, W, 3)`` uint8, written alone as diffmorph
    writes ``animation``'s format and read back; None where that format is lossless (a folder of frames, PNG) or
    unknown."""
    path = Path(animation)
    suffix = path.suffix.lower()
    lossy = {Path(format.output).suffix: format for format in WRITTEN.values() if format.lossy}
    lossy.update(dict.fromkeys(VIDEO_SUFFIXES, WRITTEN["mp4"]))
    if path.is_dir() or suffix not in lossy:
        return None
    crf = x264_crf(path) if suffix in VIDEO_SUFFIXES else None
    losses = []
    with tempfile.TemporaryDirectory(prefix="diffmorph-eval-") as folder:
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            written = Path(folder) / f"alone_{index}{Path(lossy[suffix].output).suffix}"
            writer = lossy[suffix].open(written, WriterOptions(width, height, 25, crf=crf))
            writer.add(image)
            writer.close()
            decoded = next(iter(open_frames(written).frames()))
            rows, columns = decoded.shape[:2]  # H.264 drops an odd last row or column
            losses.append(mean_abs_error(decoded, image[:rows, :columns]))
    return losses


def x264_crf(video: str | Path) -> int | None:
    """The CRF an H.264 stream was encoded at, where x264 recorded its settings in the stream (it does unless
    told not to); None otherwise."""
    try:
        with av.open(str(video)) as container:
            packet = next(container.demux(video=0), None)
            found = re.search(rb"crf=([0-9]+(?:\.[0-9]+)?)", bytes(packet)) if packet is not None else None
    except (av.error.FFmpegError, OSError, StopIteration, ValueError):
        return None
    return None if found is None else round(float(found.group(1)))


def _perceptual_path(wanted: bool | None) -> PerceptualPath | None:
    if wanted is False:
        return None
    try:
        return PerceptualPath()
    except MissingExtraError:
        if wanted:
            raise
        return None


def _ratio(value: float, reference: float) -> float | None:
    """``value / reference``, or None where the reference is 0 (two flat images have no detail to keep)."""
    return value / reference if reference > 0 else None


def _match_size(frame: np.ndarray, a: np.ndarray, b: np.ndarray, animation: str | Path
                ) -> tuple[np.ndarray, np.ndarray]:
    height, width = frame.shape[:2]
    full_h, full_w = a.shape[:2]
    if (height, width) == (full_h, full_w):
        return a, b
    if 0 <= full_h - height <= 1 and 0 <= full_w - width <= 1:
        return a[:height, :width], b[:height, :width]
    raise InputImageError(f"{animation}: frames are {width} x {height} but A is {full_w} x {full_h}; pass the "
                          f"images the morph was made from")


GOOD_VALUES = {
    "endpoint_error_first": "≤ 1",
    "endpoint_error_last": "≤ 1",
    "mid_frame_detail": "≥ 0.5 (cross-dissolve ≈ 0.5, blur lower)",
    "pacing_cv": "≤ 0.1",
    "pacing_max_over_median": "≤ 1.5",
    "fidelity_a_to_b_db": "higher is better",
    "fidelity_b_to_a_db": "higher is better",
    "perceptual_path": "lower is better, between morphs of one pair at one frame count",
    "perceptual_step_cv": "≤ 0.2",
    "perceptual_max_over_median": "≤ 1.5",
    "warp_melt": "lower is better (% of the frame; 0: affine)",
    "hint_error_px": "≤ 2 % of the diagonal (the farthest hinted point from its partner, pixels)",
    "codec_loss_first": "A written alone in this format, read back",
    "codec_loss_last": "B written alone in this format, read back",
}
