"""Pure tensor functions of the morphing method: grids, the warp, carrying and filling, applying maps.

The objective a fit minimises is in :mod:`diffmorph.loss`.

Conventions (the only place they are defined; every other module relies on them):

- Images are ``(B, C, H, W)`` float tensors with values in ``[-1, 1]``.
- A *flow* is ``(B, 2, H, W)`` in **pixels**, channel 0 = **dy** (rows), channel 1 = **dx** (columns).
- :func:`warp` is a dense *backward* warp: ``out[y, x] = img[y - dy, x - dx]``, sampled bilinearly,
  with coordinates clamped to the image (border replication). This is the semantics of TensorFlow
  Addons' ``dense_image_warp``, which the original method used, including its channel order.
- Pixel ``i`` sits at normalized coordinate ``-1 + 2 i / (n - 1)`` (``align_corners=True``), so the
  first and last pixel centres are exactly ``-1`` and ``1``.
- Maps of one direction are ``(B, 8, H, W)``: channels 0-2 *mult*, 3-5 *add*, 6-7 *warp* (dy, dx).
  The network's output stacks two directions, ``(B, 16, h, w)``: A->B then B->A.
- A coordinate grid (network input) is ``(1, 2, H, W)`` in ``[-1, 1]``, channel 0 = y, channel 1 = x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffmorph.config import MorphConfig

MULT_FLOOR = 0.1  # The original's floor on the colour factor: mult can darken to 10 %, never invert.
LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G and B in the greyscale of an image.


@dataclass(frozen=True)
class MapScales:
    """Strengths that turn raw map values into a colour factor, a colour offset and pixels of flow.

    Attributes:
        warp: flow in pixels is ``warp_map * size * warp`` along each axis (size = H for dy, W for dx).
        mult: colour factor is ``max(0.1, 1 + mult_map * mult)``.
        add: colour offset is ``add_map * 2 * add``.
        add_first: add the offset before applying the factor.
    """

    warp: float = 0.05
    mult: float = 0.4
    add: float = 0.4
    add_first: bool = False


def scales_of(config: MorphConfig) -> MapScales:
    """The strengths a config sets for its maps."""
    return MapScales(warp=config.warp_scale, mult=config.mult_scale, add=config.add_scale,
                     add_first=config.add_first)


def coordinate_grid(
    height: int, width: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Pixel-centre coordinates in ``[-1, 1]``.

    Returns:
        ``(1, 2, H, W)``: channel 0 = y, channel 1 = x.

    >>> coordinate_grid(2, 3)[0, 1].tolist()
    [[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]
    """
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_y, grid_x)).unsqueeze(0)


def sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """Where :func:`warp` samples, in ``grid_sample``'s terms.

    Args:
        flow: ``(B, 2, H, W)`` in pixels, channel 0 = dy, channel 1 = dx; ``H`` and ``W`` at least 2.

    Returns:
        ``(B, H, W, 2)``: normalized source coordinates ``(x, y)`` of each output pixel. It is affine
        in the flow, so the grid of ``t * flow`` is ``torch.lerp(sampling_grid(0 * flow), grid, t)``.

    >>> sampling_grid(torch.zeros(1, 2, 2, 3))[0, 1].tolist()
    [[-1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
    """
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got {tuple(flow.shape)}")
    height, width = flow.shape[-2:]
    if height < 2 or width < 2:
        raise ValueError(f"warp needs at least 2 x 2 pixels, got {height} x {width}")
    base = coordinate_grid(height, width, device=flow.device, dtype=flow.dtype)  # (1, 2, H, W) y, x
    pixels_to_unit = torch.tensor([2.0 / (height - 1), 2.0 / (width - 1)], device=flow.device,
                                  dtype=flow.dtype).view(1, 2, 1, 1)
    source = base - flow * pixels_to_unit  # (B, 2, H, W): where each output pixel samples, y then x
    return source.flip(1).permute(0, 2, 3, 1)  # grid_sample wants (B, H, W, 2) as x, y


def sample(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Bilinear (or ``mode="bicubic"``) sampling at a :func:`sampling_grid`, the border repeated outside the image.

    Args:
        image: ``(B, C, H, W)``.
        grid: ``(B or 1, H, W, 2)`` from :func:`sampling_grid`.

    Returns:
        ``(B, C, H, W)``.
    """
    if grid.shape[0] != image.shape[0]:
        grid = grid.expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``image`` by a dense ``flow``: ``out[y, x] = image[y - dy, x - dx]``.

    Args:
        image: ``(B, C, H, W)``, any values; ``H`` and ``W`` at least 2.
        flow: ``(B or 1, 2, H, W)`` in pixels, channel 0 = dy, channel 1 = dx. Samples falling outside
            the image take the nearest border value.

    Returns:
        ``(B, C, H, W)``, same dtype and device as ``image``.

    >>> img = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    >>> flow = torch.zeros(1, 2, 2, 4); flow[:, 1] = 1.0   # content moves 1 px right
    >>> [round(v, 4) for v in warp(img, flow)[0, 0, 0].tolist()]
    [0.0, 0.0, 1.0, 2.0]
    """
    if image.dim() != 4 or flow.dim() != 4:
        raise ValueError(f"warp expects (B, C, H, W) image and (B, 2, H, W) flow, got {tuple(image.shape)} "
                         f"and {tuple(flow.shape)}")
    batch, _, height, width = image.shape
    if flow.shape[1] != 2 or flow.shape[2:] != image.shape[2:] or flow.shape[0] not in (1, batch):
        raise ValueError(f"flow must be ({batch}, 2, {height}, {width}) for an image of shape "
                         f"{tuple(image.shape)}, got {tuple(flow.shape)}")
    grid = sampling_grid(flow)  # (B, H, W, 2)
    # grid_sample's CPU backward crashes the process on NaN coordinates (a diverging fit produces them),
    # so it gets finite ones and the affected outputs are set to NaN here, where the loss check sees them.
    invalid = torch.isnan(grid).any(dim=3).unsqueeze(1)  # (B, 1, H, W)
    out = sample(image, torch.nan_to_num(grid, nan=0.0))
    return out.masked_fill(invalid.expand(batch, -1, -1, -1), float("nan"))


def splat(values: torch.Tensor, displacement: torch.Tensor, importance: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry every pixel's ``values`` forward by ``displacement``: the weighted mean of what lands where.

    Each pixel ``p`` lands at ``p + displacement(p)``, spread over the four pixels around that point with
    bilinear weights. Where pixels land on each other, the weights are also ``exp(importance)``, so those
    of greater importance cover the rest (a softmax splat, after Niklaus and Liu, 2020).

    Args:
        values: ``(B, C, H, W)``.
        displacement: ``(B, 2, H, W)`` in pixels, dy then dx.
        importance: ``(B, 1, H, W)``; only differences within an image count, and the largest is about
            50 at most where it must not underflow.

    Returns:
        ``(mean, coverage)``: ``(B, C, H, W)`` the weighted mean of the values that landed at each pixel,
        0 where none did, and ``(B, 1, H, W)`` the sum of the bilinear weights that landed there (1 where
        the pixels kept their places).

    >>> displacement = torch.zeros(1, 2, 1, 4); displacement[:, 1, :, 1] = 1.0  # pixel 1 moves 1 px right
    >>> importance = displacement.norm(dim=1, keepdim=True) * 40  # and covers what it lands on
    >>> mean, coverage = splat(torch.arange(4.0).view(1, 1, 1, 4), displacement, importance)
    >>> mean[0, 0, 0].tolist(), coverage[0, 0, 0].tolist()
    ([0.0, 0.0, 1.0, 3.0], [1.0, 0.0, 2.0, 1.0])
    """
    if displacement.dim() != 4 or displacement.shape[1] != 2:
        raise ValueError(f"displacement must be (B, 2, H, W), got {tuple(displacement.shape)}")
    batch, _, height, width = displacement.shape
    if values.dim() != 4 or values.shape[0] != batch or values.shape[2:] != displacement.shape[2:]:
        raise ValueError(f"values must be ({batch}, C, {height}, {width}) as displacement, got {tuple(values.shape)}")
    if importance.shape != (batch, 1, height, width):
        raise ValueError(f"importance must be ({batch}, 1, {height}, {width}) as displacement, "
                         f"got {tuple(importance.shape)}")
    channels = values.shape[1]
    rows, columns = (torch.arange(n, device=displacement.device, dtype=displacement.dtype) for n in (height, width))
    landing = torch.stack(torch.meshgrid(rows, columns, indexing="ij")) + displacement  # (B, 2, H, W) pixels
    corner = landing.floor()
    fraction = landing - corner
    weight = (importance - importance.amax(dim=(2, 3), keepdim=True)).exp()  # (B, 1, H, W), at most 1
    # What each landing pixel adds up, channel-major (C + 2, B, HW): its values and 1 times its weight, and 1.
    carried = torch.cat([x.transpose(0, 1) for x in (values * weight, weight, torch.ones_like(weight))]).flatten(2)
    first = torch.arange(batch, device=displacement.device).view(batch, 1, 1) * (height * width)  # (B, 1, 1)
    # Per axis, the two pixels a landing point lies between: their bilinear shares, whether each is on the image,
    # and where each is in the flattened frame (clamped onto it). Each corner combines one row and one column.
    rows, columns = (corner[:, 0], corner[:, 0] + 1), (corner[:, 1], corner[:, 1] + 1)  # (B, H, W) each
    row_shares, column_shares = (1.0 - fraction[:, 0], fraction[:, 0]), (1.0 - fraction[:, 1], fraction[:, 1])
    rows_inside = [(row >= 0) & (row < height) for row in rows]
    columns_inside = [(column >= 0) & (column < width) for column in columns]
    row_starts = [row.clamp(0, height - 1) * width for row in rows]
    columns = [column.clamp(0, width - 1) for column in columns]
    shares, indices = [], []
    for down, right in ((0, 0), (0, 1), (1, 0), (1, 1)):
        # A corner off the image gets nothing (added to a pixel on it, times 0).
        shares.append(row_shares[down] * column_shares[right] * (rows_inside[down] & columns_inside[right]))
        indices.append((row_starts[down] + columns[right]).flatten(1).long())
    index = (first + torch.stack(indices, dim=1)).flatten()  # (B * 4 * HW,)
    # (C + 2, B, 4, HW) to each pixel's four corners, summed along a row per channel (on a CPU, several times faster)
    added = carried.unsqueeze(2) * torch.stack(shares, dim=1).flatten(2).unsqueeze(0)
    totals = displacement.new_zeros(channels + 2, batch * height * width).index_add_(1, index, added.flatten(1))
    totals = totals.view(channels + 2, batch, height, width)
    mean = totals[:channels] / totals[channels:channels + 1].clamp_min(torch.finfo(totals.dtype).tiny)
    # Back to (B, C, H, W) in memory: what follows (a blur's convolution) is several times slower on a view
    return mean.transpose(0, 1).contiguous(), totals[channels + 1:].transpose(0, 1)


def fill_holes(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``image`` with the pixels where ``known`` is False filled in from the known ones around them.

    Pull-push (Gortler et al., 1996): the known pixels are averaged down a pyramid of halvings until
    every pixel of a level is known, and each hole takes the value of the level below it, upsampled,
    so a small hole takes its neighbours' colour and a large one a smooth blend of its surroundings.

    Args:
        image: ``(B, C, H, W)``.
        known: ``(B, 1, H, W)`` bool; an image of the batch with nothing known is returned unchanged.

    Returns:
        ``(B, C, H, W)``, equal to ``image`` where ``known``.

    >>> image = torch.tensor([[[[1.0, 0.0, 3.0]]]])
    >>> fill_holes(image, torch.tensor([[[[True, False, True]]]])).tolist()
    [[[[1.0, 2.0, 3.0]]]]
    """
    if known.shape != (image.shape[0], 1, *image.shape[2:]) or known.dtype != torch.bool:
        raise ValueError(f"known must be a (B, 1, H, W) bool tensor matching image {tuple(image.shape)}, "
                         f"got {tuple(known.shape)} {known.dtype}")
    known = known | ~known.any(dim=(2, 3), keepdim=True)  # nothing to fill from: leave it
    if bool(known.all()):
        return image
    return torch.where(known, image, _pulled(image, known.to(image.dtype)))


def _pulled(image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The known pixels' mean (``weight`` above 0) at every pixel, from the next coarser level where unknown."""
    if bool((weight > 0).all()) or image.shape[-2:] == (1, 1):
        return image
    halving = (min(2, image.shape[-2]), min(2, image.shape[-1]))  # a side of 1 pixel stays 1
    coarse_weight = F.avg_pool2d(weight, halving, ceil_mode=True)
    coarse = F.avg_pool2d(image * weight, halving, ceil_mode=True) / coarse_weight.clamp_min(1e-12)
    below = F.interpolate(_pulled(coarse, coarse_weight), size=image.shape[-2:], mode="bilinear",
                          align_corners=False)
    return torch.where(weight > 0, image, below)


def length(flow: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)``: the length of each vector of a ``(B, 2, H, W)`` flow.

    The same as ``flow.norm(dim=1, keepdim=True)``, about 100x faster on a CPU for frame-sized flows.

    >>> length(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)).item()
    5.0
    """
    return torch.hypot(flow[:, 0:1], flow[:, 1:2])


def flow_from_warp_map(warp_map: torch.Tensor, scale: float) -> torch.Tensor:
    """Turn a raw warp map into a flow in pixels of its own resolution.

    Args:
        warp_map: ``(B, 2, H, W)`` raw network output, channel 0 = y, channel 1 = x.
        scale: displacement at map value 1 as a fraction of the image's extent on that axis.

    Returns:
        ``(B, 2, H, W)`` flow in pixels: ``dy = map_y * H * scale``, ``dx = map_x * W * scale``.
    """
    height, width = warp_map.shape[-2:]
    size = torch.tensor([height, width], device=warp_map.device, dtype=warp_map.dtype).view(1, 2, 1, 1)
    return warp_map * size * scale


def apply_maps(image: torch.Tensor, maps: torch.Tensor, scales: MapScales) -> torch.Tensor:
    """Apply one direction's maps to an image: colour change, then the warp.

    ``warp(image * max(0.1, 1 + mult * s_mult) + add * 2 * s_add, flow)``, or with ``add_first``
    ``warp((image + add * 2 * s_add) * max(0.1, 1 + mult * s_mult), flow)``. The result is not clipped.

    Args:
        image: ``(B, 3, H, W)`` in ``[-1, 1]``.
        maps: ``(B, 8, H, W)``: mult (0-2), add (3-5), warp (6-7, y then x). Scaling the maps by
            ``t`` scales every effect, which is how frames between the endpoints are made.
        scales: the strengths, see :class:`MapScales`.

    Returns:
        ``(B, 3, H, W)``.
    """
    if maps.dim() != 4 or maps.shape[1] != 8 or maps.shape[2:] != image.shape[2:]:
        raise ValueError(f"maps must be (B, 8, H, W) matching an image of shape {tuple(image.shape)}, "
                         f"got {tuple(maps.shape)}")
    # split, not three slices: each slice's gradient would be a zero tensor of all eight maps, filled
    mult_map, add_map, warp_map = maps.split((3, 3, 2), dim=1)
    return warp(recolour(image, mult_map, add_map, scales), flow_from_warp_map(warp_map, scales.warp))


def recolour(image: torch.Tensor, mult_map: torch.Tensor, add_map: torch.Tensor, scales: MapScales,
             strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The colour half of :func:`apply_maps`, with the maps scaled by ``strength``.

    ``image * max(0.1, 1 + s mult s_mult) + s add 2 s_add``, or with ``add_first``
    ``(image + s add 2 s_add) * max(0.1, 1 + s mult s_mult)``.

    Args:
        image, mult_map, add_map: ``(B, 3, H, W)``.
        strength: a number, or ``(B,)`` with one strength per image.

    Returns:
        ``(B, 3, H, W)``.
    """
    if isinstance(strength, torch.Tensor):
        strength = strength.view(-1, 1, 1, 1)
    factor = torch.clamp(mult_map * (strength * scales.mult) + 1.0, min=MULT_FLOOR)
    offset = add_map * (strength * 2.0 * scales.add)
    if scales.add_first:
        return (image + offset) * factor
    return image * factor + offset


def resize(image: torch.Tensor, height: int, width: int, *, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize with half-pixel centres (TensorFlow's ``tf.image.resize`` default).

    Args:
        image: ``(B, C, h, w)``.
        antialias: low-pass before downscaling; the original method did not.

    Returns:
        ``(B, C, height, width)``; the input itself when the size already matches.
    """
    if image.shape[-2:] == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=antialias)


def luma(image: torch.Tensor) -> torch.Tensor:
    """Greyscale with the :data:`LUMA` weights: ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    weights = torch.tensor(LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with the border repeated, ``sigma`` in pixels (below 0.3: unchanged).

    Args:
        image: ``(B, C, H, W)``.

    Returns:
        ``(B, C, H, W)``.

    >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 4), bool(y[0, 0, 4, 4] < 0.2)
    (1.0, True)
    """
    if sigma < 0.3:
        return image
    radius = min(math.ceil(3.0 * sigma), max(image.shape[-2:]) - 1)  # wider taps would only add border repeats
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    # The batch's planes as one image's channels: oneDNN's grouped convolution is several times slower on a batch
    planes = image.shape[0] * image.shape[1]
    padded = F.pad(image.reshape(1, planes, *image.shape[-2:]), (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(planes, 1, 1, -1), groups=planes)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(planes, 1, -1, 1), groups=planes).view(image.shape)


def blend_frame(a: torch.Tensor, b: torch.Tensor, maps_ab: torch.Tensor, maps_ba: torch.Tensor, t: float,
                scales: MapScales) -> torch.Tensor:
    """One in-between frame at time ``t`` in ``[0, 1]``.

    ``A' = clip(apply(A, t maps_AB))``, ``B' = clip(apply(B, (1 - t) maps_BA))``,
    ``frame = (1 - t) A' + t B'``. At ``t = 0`` this is ``A``; at ``t = 1`` it is ``B``.

    Args:
        a, b: ``(B, 3, H, W)`` in ``[-1, 1]``.
        maps_ab, maps_ba: ``(B, 8, H, W)`` at the same resolution as the images.

    Returns:
        ``(B, 3, H, W)`` in ``[-1, 1]``.
    """
    a_moved = apply_maps(a, maps_ab * t, scales).clamp(-1.0, 1.0)
    b_moved = apply_maps(b, maps_ba * (1.0 - t), scales).clamp(-1.0, 1.0)
    return a_moved * (1.0 - t) + b_moved * t


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in ``[-1, 1]`` (peak-to-peak range 2).

    >>> round(psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.02)), 2)
    40.0
    """
    mse = F.mse_loss(x.double(), y.double()).item()
    if mse == 0.0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(4.0 / mse, dtype=torch.float64)).item()
