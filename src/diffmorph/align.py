"""A first guess of the warp, found before the fit: how B's content sits in A's frame as a whole.

The fit is a descent on an image difference, whose gradient with respect to the warp only sees about
a pixel around each sample. Content that moved further than that is not followed but recoloured:
mid-morph it fades out in one place and in at the other, and shows twice. When B is A's scene moved,
zoomed or turned (a second shot of the same subject, a re-framed photo), that move is found here, directly,
and the fit starts from it and refines it.

The move is a turn and a zoom about the centre, then a shift. For each of a few turns and zooms, A is
turned and scaled, and the shift is read off the peak of the phase correlation of A's and B's
structure (their luma with coarse shading and the frame's edges suppressed). The best peak is used
only if it stands far above the rest of the correlation surface and carrying A by it makes A's
structure agree better with B's; unrelated images give no such peak, and their fit starts from no
warp, as the original's did.

Where B shows A's subject changed in shape (two faces, two poses), no one move fits. The move is then
bent region by region (:func:`local_warp`): a smooth field per direction fitted to the local correlation
of the two greyscales. ``align="auto"`` keeps the bent start only where the move alone leaves the two
pictures' structure apart (agreement below :data:`EXPLAINED`) and bending makes it agree (at least
:data:`AGREED`, and :data:`BENT_GAIN` more than the move did); elsewhere it keeps the move. Bending finds
something to match in any two pictures: two faces of different people agree after it no better than some
unrelated pictures do, so some unrelated pairs are bent too (and crumple a little); it tears a subject that
moved further than its own size. ``"global"`` never bends, ``"local"`` always does.

Such a subject, moved far over ground that changed (a ball rolled onto other ground, the sun setting where
the moon rises), has nothing around it for a search of the whole picture or a local bend to match. Where
each image has one compact subject that stands out of its ground (:func:`subject_mask`: colours the frame's
border does not show) and the two agree in shape, :func:`find_subject_move` finds how it moved and grew,
and the start carries that subject alone (``align="subject"``, and ``"auto"`` where it does not bend).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from diffmorph.ops import flow_from_warp_map, gaussian_blur, luma, resize, warp

SIZE = 128  # Both images are compared at this square size, whatever the fit's working size.
SCALES = (0.8, 0.9, 1.0, 1.1, 1.25)  # Zooms tried, B's content against A's.
ANGLES = (-10.0, -5.0, 0.0, 5.0, 10.0)  # Turns tried, degrees anticlockwise; the fit refines the rest.
CONFIDENCE = 14.0  # Least height of the correlation peak, in standard deviations of the whole surface.
STRUCTURE_BAND = 1 / 16  # Shading coarser than this fraction of the frame is left out of the correlation.

# Measured (benchmarks/compare_objectives.py pairs and skimage photos): copies of a scene moved, zoomed
# and turned by up to 15 degrees peak at 21-55, unrelated pairs at 7.2-10.8.


@dataclass(frozen=True)
class Alignment:
    """B's content is A's turned by ``angle`` and scaled by ``scale`` about the centre, then moved by ``shift``.

    Attributes:
        scale: zoom from A to B (above 1: B shows it larger).
        shift: ``(dy, dx)`` as fractions of the height and width (positive: down and right).
        confidence: height of the correlation peak in standard deviations of the surface.
        angle: turn from A to B in degrees, anticlockwise as seen on screen.
    """

    scale: float
    shift: tuple[float, float]
    confidence: float
    angle: float = 0.0

    def describe(self) -> str:
        """One line for a log, e.g. ``aligned: B is A moved 12 % right and 6 % down, 1.1x larger``."""
        dy, dx = self.shift
        moves = [f"{abs(value) * 100:.0f} % {names[value > 0]}"
                 for value, names in ((dx, ("left", "right")), (dy, ("up", "down"))) if round(abs(value) * 100)]
        parts = [f"moved {' and '.join(moves)}"] if moves else []
        if self.scale != 1.0:
            parts.append(f"{self.scale:g}x {'larger' if self.scale > 1 else 'smaller'}")
        if self.angle:
            parts.append(f"turned {abs(self.angle):g} degrees {'anticlockwise' if self.angle > 0 else 'clockwise'}")
        return f"aligned: B is A {', '.join(parts) or 'as it is'}"


def structure(image: torch.Tensor) -> torch.Tensor:
    """What the correlation compares: luma less its coarse shading, faded out towards the frame's edges.

    Args:
        image: ``(1, 3, S, S)`` in ``[-1, 1]``.

    Returns:
        ``(S, S)``.
    """
    size = image.shape[-1]
    grey = luma(image)
    band = (grey - gaussian_blur(grey, STRUCTURE_BAND * size))[0, 0]
    window = torch.hann_window(size, periodic=False, dtype=image.dtype, device=image.device)
    return (band - band.mean()) * window[:, None] * window[None, :]


def phase_correlate(a: torch.Tensor, b: torch.Tensor) -> tuple[tuple[int, int], float]:
    """The whole-pixel shift ``d`` with ``b(x) ≈ a(x - d)``, and the height of its peak.

    Args:
        a, b: ``(S, S)`` real images, such as :func:`structure` gives.

    Returns:
        ``((dy, dx), confidence)``: the shift in pixels, each in ``[-S/2, S/2)``, and the peak in
        standard deviations of the correlation surface.

    >>> x = torch.rand(32, 32)
    >>> phase_correlate(x, x.roll((3, -5), (0, 1)))[0]
    (3, -5)
    """
    size = a.shape[-1]
    cross = torch.fft.rfft2(b) * torch.fft.rfft2(a).conj()
    surface = torch.fft.irfft2(cross / (cross.abs() + 1e-9), s=a.shape)
    # Centred and smoothed a little: a shift between whole pixels spreads its peak over neighbours.
    surface = surface.roll((size // 2, size // 2), (0, 1))
    surface = gaussian_blur(surface[None, None], 1.0)[0, 0]
    peak = int(surface.argmax())
    spread = float(surface.std())
    confidence = float(surface.max() - surface.mean()) / spread if spread > 0 else 0.0  # flat images: no peak
    return (peak // size - size // 2, peak % size - size // 2), confidence


def find_alignment(a: torch.Tensor, b: torch.Tensor) -> Alignment | None:
    """How B's content sits in A's frame, if the two clearly show the same thing moved, zoomed or turned.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size; they are compared squashed
            to :data:`SIZE` x :data:`SIZE`, as the fit squashes them to its working size.

    Returns:
        An :class:`Alignment`, or None when no move stands out (unrelated images) or the best one
        is no move at all.
    """
    size = SIZE
    a, b = resize(a, size, size, antialias=True), resize(b, size, size, antialias=True)
    target = structure(b)
    best: Alignment | None = None
    for angle in ANGLES:
        for scale in SCALES:
            (dy, dx), confidence = phase_correlate(structure(_turn_and_zoom(a, scale, angle)), target)
            if best is None or confidence > best.confidence:
                best = Alignment(scale=scale, shift=(dy / size, dx / size), confidence=confidence, angle=angle)
    if best is None or best.confidence < CONFIDENCE or (best.scale == 1.0 and best.angle == 0.0
                                                         and best.shift == (0.0, 0.0)):
        return None
    carried = warp(a, flow_from_warp_map(warp_prior(best, 1.0, size, size)[None, 6:8].to(a), 1.0))
    if _agreement(carried, target) <= _agreement(a, target):
        return None
    return best


def warp_prior(alignment: Alignment, warp_scale: float, height: int, width: int) -> torch.Tensor:
    """Raw maps that only warp, by ``alignment`` from A to B and by its inverse from B to A.

    The fit adds them to its network's output, so it starts from the move.

    Args:
        warp_scale: the config's ``warp_scale`` (map value 1 moves this fraction of the frame).
        height, width: the maps' resolution. Pixel centres sit at ``(i + 0.5) / n`` of the frame, so
            a bilinear resize of the maps to any size keeps the field affine.

    Returns:
        ``(16, height, width)``: zero colour maps; warp maps in channels 6-7 (A->B) and 14-15 (B->A).
    """
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5  # from the centre, fractions
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    (dy, dx), scale = alignment.shift, alignment.scale
    cos, sin = math.cos(math.radians(alignment.angle)), math.sin(math.radians(alignment.angle))
    maps = torch.zeros(16, height, width)
    # A->B: B(p) = A(M (p - d)) with M = R / s, R the turn matrix in (x, y): the backward flow is
    # p - M (p - d). B->A: A(p) = B(M^-1 p + d) with M^-1 = s R^T.
    ty, tx = y - dy, x - dx
    maps[6] = y - (sin * tx + cos * ty) / scale
    maps[7] = x - (cos * tx - sin * ty) / scale
    maps[14] = y - (scale * (-sin * x + cos * y) + dy)
    maps[15] = x - (scale * (cos * x + sin * y) + dx)
    return maps / warp_scale


def _turn_and_zoom(image: torch.Tensor, scale: float, angle: float) -> torch.Tensor:
    """``image`` turned by ``angle`` degrees anticlockwise and scaled by ``scale`` about its centre, in its
    own frame, the border repeated."""
    if scale == 1.0 and angle == 0.0:
        return image
    cos, sin = math.cos(math.radians(angle)) / scale, math.sin(math.radians(angle)) / scale
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _agreement(image: torch.Tensor, target: torch.Tensor) -> float:
    """Correlation of an image's :func:`structure` with another's, ``target``."""
    sx, sy = structure(image).flatten(), target.flatten()
    return float((sx * sy).sum() / (sx.norm() * sy.norm() + 1e-12))


# The subject's move (see find_subject_move).
SUBJECT_SIZE = 64  # Both images are searched for a subject squashed to this square size.
# Least colour distance (RGB in [-1, 1]) from every colour of the frame's border for a pixel to belong to a
# subject. Measured at 64 px: backgrounds (textures, skies, the border's own colours) sit at 0.001-0.04 for
# three quarters of their pixels; the generated balls, suns and moons at 0.1-2.
SUBJECT_CONTRAST = 0.1
# What makes a region a subject rather than a piece of a busy picture. Measured at 64 px on the generated balls,
# sun and moon (all kept) and 20 of scikit-image's photos and textures: the generated ones hold all of the
# distance (share 0.98-1), fill 0.75-0.81 of their bounding box and stand out 21-260 times; the regions
# found in photos (a collar, a crater, a cat's face, a camera's top) hold 0.64-1, fill 0.55-0.61 and stand
# out 3-16 times, except a clock face on a plain wall (1, 0.70, 250, kept).
SUBJECT_SHARE = 0.8  # The subject holds at least this share of all such pixels' distance: one subject, not many.
SUBJECT_FILL = 0.65  # It covers at least this share of its bounding box: a compact thing, not a ragged piece.
SUBJECT_STANDOUT = 10.0  # Its mean distance is at least this many times that of the rest of the frame.
SUBJECT_AREA = (0.01, 0.35)  # Its area as a fraction of the frame: smaller is noise, larger is no subject.
SUBJECT_RESIZE = (0.5, 2.0)  # Least and most size of B's subject over A's.
# Least overlap (intersection over union) of B's subject with A's carried by the move: the same shape. Measured:
# the textured pair's balls 0.93, the demo's sun and moon 0.83; two faces of different people 0.51 (with the
# looser subject test first tried; the test above finds no subject in either face).
SUBJECT_OVERLAP = 0.6
SUBJECT_SCALES = (0.8, 0.87, 0.93, 1.0, 1.07, 1.15, 1.25)  # Factors on the ratio of the areas tried for the move.
SUBJECT_SHIFTS = (-3, -2, -1, 0, 1, 2, 3)  # Pixels (at SUBJECT_SIZE) tried around the centres' move, each way.
# A subject fades into its ground (a glow) where the mean distance (see SUBJECT_CONTRAST) of the pixels two
# pixels outside it is at least SUBJECT_FADES. Measured at 64 px: the generated balls 0.002-0.015, the demo's
# suns and moons drawn at 160 x 120 to 960 x 720 0.037-0.057.
SUBJECT_FADES = 0.025
# For such a subject the carried share of the warp (see _subject_weights) is 1 on its core, the pixels that
# stand out at least SUBJECT_CORE times as much as its most outstanding one, and falls off towards its edge as
# a Gaussian of SUBJECT_SOFT pixels (at SUBJECT_SIZE) would. Measured on the demo pair (480 x 360, seeds 0 and
# 1): held wholly up to its edge, as a subject with an edge is, the glow was cut there, and the part carried
# and the part left made bright and dark crescents mid-morph; with this edge one disc and its glow travel,
# and the fit reproduces each image 2.6-3.7 / 4.2-4.6 dB better. A soft edge of 3 pixels still cut it, one
# of 6 let the fit stretch the disc into a pear, and without the core held a disc drawn smaller (240 x 180)
# went oval.
SUBJECT_CORE = 0.5
SUBJECT_SOFT = 4.0


@dataclass(frozen=True)
class SubjectMove:
    """B's subject is A's, scaled by ``scale`` about its centre and moved from ``centre_a`` to ``centre_b``.

    Attributes:
        scale: size of B's subject over A's.
        centre_a, centre_b: ``(y, x)`` of each subject's centre, fractions of the frame's height and width.
        overlap: intersection over union of B's subject with A's carried by the move.
    """

    scale: float
    centre_a: tuple[float, float]
    centre_b: tuple[float, float]
    overlap: float

    def describe(self) -> str:
        """One line for a log, e.g. ``aligned: the subject moves 42 % right and 28 % up, 0.8x smaller``."""
        dy, dx = (b - a for a, b in zip(self.centre_a, self.centre_b, strict=True))
        moves = [f"{abs(value) * 100:.0f} % {names[value > 0]}"
                 for value, names in ((dx, ("left", "right")), (dy, ("up", "down"))) if round(abs(value) * 100)]
        parts = [f"moves {' and '.join(moves)}"] if moves else ["stays"]
        if round(self.scale, 1) != 1.0:
            parts.append(f"{self.scale:.1f}x {'larger' if self.scale > 1 else 'smaller'}")
        return f"aligned: the subject {', '.join(parts)}"


def subject_mask(image: torch.Tensor) -> torch.Tensor | None:
    """Where the one subject of ``image`` is: a region whose colours the frame's border does not show.

    Each pixel's distance (lightly blurred, RGB) from the nearest colour of the border's pixels says how much
    it stands out from the background; the pixels at least :data:`SUBJECT_CONTRAST` away fall into connected
    regions, and the one holding the most distance is the subject. There is none where that region touches
    the border (a subject cut off by the frame, or a background that changes across it), holds less than
    :data:`SUBJECT_SHARE` of all the distance, covers less than :data:`SUBJECT_FILL` of its bounding box,
    stands out less than :data:`SUBJECT_STANDOUT` times as much as the rest, or covers an area outside
    :data:`SUBJECT_AREA`.

    Args:
        image: ``(1, 3, S, S)`` in ``[-1, 1]``.

    Returns:
        ``(S, S)`` bool, or None where the image has no one clear subject.

    >>> disc = torch.full((1, 3, 32, 32), -0.5)
    >>> ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    >>> disc[:, 0, (ys - 12) ** 2 + (xs - 20) ** 2 < 25] = 0.8
    >>> mask = subject_mask(disc)
    >>> mask[12, 20].item(), mask[12, 25].item(), mask[12, 27].item(), int(mask.sum()) - 69  # the blur adds a ring
    (True, True, False, 40)
    """
    distance = _border_distance(image)
    # Opened (eroded, then grown back): a thin line of such pixels, as an antialiased edge between two
    # background colours makes, neither counts nor joins a subject to the background.
    standing = (distance >= SUBJECT_CONTRAST).float()[None, None]
    standing = F.max_pool2d(-F.max_pool2d(-standing, 3, 1, 1), 3, 1, 1)[0, 0] > 0.5
    labels = _regions(standing)
    if labels.max() < 0:
        return None
    mass = torch.zeros(labels.numel(), dtype=distance.dtype).index_add_(
        0, labels.flatten().clamp_min(0), distance.flatten() * (labels.flatten() >= 0))
    mask = labels == mass.argmax()
    area = float(mask.float().mean())
    if (torch.cat((mask[0], mask[-1], mask[:, 0], mask[:, -1])).any() or mass.max() < SUBJECT_SHARE * mass.sum()
            or not SUBJECT_AREA[0] <= area <= SUBJECT_AREA[1]):
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    box = float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    if float(mask.sum()) < SUBJECT_FILL * box or distance[mask].mean() < SUBJECT_STANDOUT * distance[~mask].mean():
        return None
    return mask


def _border_distance(image: torch.Tensor) -> torch.Tensor:
    """``(S, S)``: each pixel's colour distance (lightly blurred, RGB) from the nearest colour of the frame's
    border, for an ``(1, 3, S, S)`` image."""
    colours = gaussian_blur(image, 1.0)[0]  # (3, S, S)
    border = torch.cat((colours[:, 0], colours[:, -1], colours[:, 1:-1, 0], colours[:, 1:-1, -1]), dim=1)
    return torch.cdist(colours.flatten(1).T, border.T).amin(dim=1).view(colours.shape[1:])


def _subject_core(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """For a subject (``mask``, :func:`subject_mask` of ``image``) that fades into its ground, as a glow does,
    the pixels that stand out at least :data:`SUBJECT_CORE` times as much as its most outstanding one (the sun's
    disc, not its glow); None for a subject with an edge (a ball), whose distance has fallen to the ground's two
    pixels outside it (see :data:`SUBJECT_FADES`)."""
    distance = _border_distance(image)
    grown = [F.max_pool2d(mask.float()[None, None], 2 * k + 1, 1, k)[0, 0] > 0.5 for k in (1, 2)]
    if float(distance[grown[1] & ~grown[0]].mean()) < SUBJECT_FADES:
        return None
    return mask & (distance >= SUBJECT_CORE * distance[mask].max())


def _regions(mask: torch.Tensor) -> torch.Tensor:
    """Connected regions (4-neighbours) of an ``(H, W)`` bool mask: each pixel's region is named by the
    largest flat index in it, and pixels outside the mask are -1.

    >>> _regions(torch.tensor([[True, False, True], [True, False, False]])).tolist()
    [[3, -1, 2], [3, -1, -1]]
    """
    index = torch.arange(mask.numel(), dtype=torch.float32).view(1, 1, *mask.shape)
    labels = torch.where(mask, index, -1.0)
    while True:  # each pass spreads every region's largest index by one pixel; a few dozen passes here
        spread = torch.stack((labels, F.max_pool2d(labels, (3, 1), 1, (1, 0)),
                              F.max_pool2d(labels, (1, 3), 1, (0, 1)))).amax(dim=0)
        spread = torch.where(mask, spread, -1.0)
        if torch.equal(spread, labels):
            return labels[0, 0].long()
        labels = spread


def find_subject_move(a: torch.Tensor, b: torch.Tensor) -> tuple[SubjectMove, torch.Tensor, torch.Tensor] | None:
    """How the one subject of A sits in B, where each has one (see :func:`subject_mask`) and they agree in shape.

    The move scales A's subject about its centre to B's subject's area and puts it on B's subject's centre;
    it is kept where B's subject overlaps A's so carried by at least :data:`SUBJECT_OVERLAP` and its size changes
    within :data:`SUBJECT_RESIZE`.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size, searched squashed to
            :data:`SUBJECT_SIZE` x :data:`SUBJECT_SIZE`.

    Returns:
        The :class:`SubjectMove` and both subjects' masks (``(S, S)`` bool), or None.
    """
    size = SUBJECT_SIZE
    masks = [subject_mask(resize(image, size, size, antialias=True)) for image in (a, b)]
    if masks[0] is None or masks[1] is None:
        return None
    # The centres and the ratio of the areas give a first move; the one of the moves around it that makes the
    # two masks overlap best is kept (a shadow or a highlight that only one image counts shifts the centres).
    (ay, ax), (by, bx) = _centre(masks[0]), _centre(masks[1])
    ratio = math.sqrt(float(masks[1].sum()) / float(masks[0].sum()))
    if not SUBJECT_RESIZE[0] <= ratio <= SUBJECT_RESIZE[1]:
        return None
    candidates = [SubjectMove(ratio * factor, (ay, ax), (by + dy / size, bx + dx / size), 0.0)
                  for factor in SUBJECT_SCALES for dy in SUBJECT_SHIFTS for dx in SUBJECT_SHIFTS]
    flows = torch.stack([_subject_flows(move, size)[0] for move in candidates]) * size  # (N, 2, S, S)
    overlaps = _overlap(warp(masks[0].float().expand(len(candidates), 1, size, size), flows)[:, 0] > 0.5, masks[1])
    best = int(overlaps.argmax())
    if overlaps[best] < SUBJECT_OVERLAP:
        return None
    return replace(candidates[best], overlap=float(overlaps[best])), masks[0], masks[1]


def _overlap(masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each of ``(..., S, S)`` bool ``masks`` with ``target``: ``(...)``."""
    return (masks & target).sum(dim=(-2, -1)) / (masks | target).sum(dim=(-2, -1))


def _centre(mask: torch.Tensor) -> tuple[float, float]:
    """``(y, x)`` of an ``(S, S)`` mask's centroid, fractions of the frame (pixel centres at ``(i + 0.5) / S``)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    size = mask.shape[-1]
    return (float(ys.float().mean()) + 0.5) / size, (float(xs.float().mean()) + 0.5) / size


def _subject_flows(move: SubjectMove, size: int, weights: torch.Tensor | None = None,
                   background: torch.Tensor | None = None) -> torch.Tensor:
    """Backward flows that carry A's subject onto B's and B's onto A's.

    With ``weights`` (:func:`_subject_weights`), each direction moves its pixels by the move in that share
    and by ``background`` (none: zero) in the rest; without, it moves the whole frame.

    Returns:
        ``(2, 2, size, size)`` in fractions of the frame, as :func:`_move_flows`.
    """
    ys = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(ys, ys, indexing="ij")
    (ay, ax), (by, bx), scale = move.centre_a, move.centre_b, move.scale
    # A->B on B's grid: p shows A at (p - c_b) / s + c_a. B->A on A's grid: q shows B at s (q - c_a) + c_b.
    ab = torch.stack((y - ((y - by) / scale + ay), x - ((x - bx) / scale + ax)))
    ba = torch.stack((y - (scale * (y - ay) + by), x - (scale * (x - ax) + bx)))
    subject = torch.stack((ab, ba))
    if weights is None:
        return subject
    background = torch.zeros_like(subject) if background is None else background
    return weights * subject + (1 - weights) * background


def _subject_weights(move: SubjectMove, masks: tuple[torch.Tensor, torch.Tensor], size: int,
                     cores: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Where each direction's warp carries the subject: ``(2, 1, size, size)`` in ``[0, 1]``, A->B on B's grid.

    That is the pixels of the target's subject that the move fetches from the other's subject (grown by a
    pixel, the edge softened): where the two shapes differ, the move would carry pieces of the ground along
    (the hills under the demo's sun). With ``cores`` (:func:`_subject_core`), for subjects that fade into their
    ground, only the cores are carried wholly and the share falls off smoothly towards the subjects' edges
    (:data:`SUBJECT_SOFT`), so that a glow stretches between the carried subject and the ground left in place
    rather than being cut at the edge.
    """
    def fetched(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        sources = torch.stack([pair[0].float(), pair[1].float()])[:, None]  # (2, 1, s, s): A's, then B's
        targets = torch.stack([pair[1].float(), pair[0].float()])[:, None]
        carried = warp(sources, _subject_flows(move, sources.shape[-1]) * sources.shape[-1])
        return resize(targets * carried, size, size)

    pixel = size / SUBJECT_SIZE
    if cores is None:
        return gaussian_blur(F.max_pool2d(fetched(masks), 3, 1, 1), pixel)
    held = gaussian_blur(F.max_pool2d(fetched(cores), 3, 1, 1), pixel)
    return torch.maximum(held, gaussian_blur(fetched(masks), SUBJECT_SOFT * pixel))


# The local refinement (see local_warp): (resolution, control points per side, steps) per level.
LOCAL_LEVELS = ((32, 4, 40), (32, 8, 40), (64, 16, 40), (128, 24, 40), (256, 48, 40))
LOCAL_SIZE = 256  # Both images are compared squashed to this square size, the finest level's.
DECIDING_LEVELS = 4  # "auto" decides whether to bend on the levels up to SIZE (see starting_maps).
LOCAL_RATE = 0.01  # Adam's step on the control points, in fractions of the frame.
LOCAL_SMOOTH = 0.05  # Weight of the stretching penalty (any change of the field) against the disagreement.
# Weight of the curving penalty (a change of the field other than a zoom, turn or shift of a region) on the
# coarse levels, those with at most LOCAL_CURVED_POINTS control points per side. Without it, between two
# different faces those levels matched the faces' dark and light blobs by stretching one into a caricature
# of the other, and the finer levels crumpled it further; with it they first zoom and move a face onto the
# other and bend it only where that pays. Measured: the end-point error of the stereo pair's bent start fell
# from 3.87 to 3.67 px (benchmarks/compare_correspondence.py); 0.01 gave 4.00 px, and 0.003 on every level
# 4.02 px (the fine levels need to bend sharply at depth edges).
LOCAL_CURVE = 0.003
LOCAL_CURVED_POINTS = 16
# The finer levels pay for curving too, but robustly (see _kinking): strong curving costs in proportion to
# its size, not its square, so the field can bend sharply at a depth edge, while the many smaller bends with
# which two unrelated pictures' textures are matched piece by piece are still held back. Measured on the
# stereo pair's bent start (the end-point error, mean / median): 3.69 / 1.11 px without it, 3.36 / 0.75 with
# it (weight 0.002: 3.56 / 0.77; 0.005: 3.65 / 0.84; the squared penalty at 0.0003: 3.73 / 0.92, at 0.001:
# 4.03 / 1.33); between unrelated photos the finished field curves about a third less (astronaut and coffee,
# the mean squared second derivative at 48 x 48 points: 1405 -> 934).
LOCAL_KINK = 0.001
LOCAL_KINK_SCALE = 5.0  # Curvature (second derivative, frames per frame squared) above which it costs linearly.
LOCAL_LEAST_AREA = 0.5  # Where the warp shrinks area below this factor, it is penalised (it would fold).
LOCAL_FOLD = 10.0  # Weight of that penalty.
LOCAL_WINDOW = 13  # Side in pixels of the windows over which the greyscales are correlated, at every level.
# Measured on skimage photos (astronaut, cat) bent by smooth random fields, the start alone: halfway
# agreement of the astronaut 0.51 with windows of 5 pixels, 0.58 with 9, 0.74 with 13, 0.68 with 17 at
# 1.4 times the time.
EXPLAINED = 0.95  # Structure agreement after the move from which "auto" takes it as explaining the pair.
# Least agreement after bending for which "auto" keeps the bent start: the same kind of subject in another
# shape. Measured (_carried_agreement, the mean of both directions, move -> bent up to SIZE; generated pairs at
# 256 px): a copy of a scene moved, zoomed and turned 0.98 (move kept); scenes and photos bent by smooth
# random fields 0.35-0.78 -> 0.94-0.99; the astronaut and the cat and their mirror images 0.20 and -0.04 ->
# 0.84 and 0.86; the Middlebury motorcycle stereo pair 0.76 -> 0.94. Faces of different people: two people at
# 384 px (Grace Hopper, the astronaut; benchmarks/compare_objectives.py --photos) -0.08 -> 0.68; 24 random
# pairs of scikit-image's Labeled Faces in the Wild sample (25 px, enlarged to 256, so little structure is
# left) 0.00-0.88 after bending, 7 of them at 0.6 or more, 2 at 0.8. Unrelated pictures reach as much: six
# pairs of unrelated photos -0.04-0.10 -> 0.40-0.71, the cameraman and his mirror image 0.22 -> 0.61, and 4 of
# 33 random pairs of 15 scikit-image photos and textures reach 0.6; no line tells two faces from any two
# pictures. At 0.8, mid-morph most pairs of faces showed two pairs of eyes and two mouths. At 0.6 more faces
# are bent into one, and so are the unrelated pairs above it, which bend into each other with some crumpling
# where they would have crossfaded; below it stay the demo pair -0.01 -> 0.41, the textured pair -0.13 -> 0.44
# (a subject moved further than its size across a changed ground, which bending tears) and most unrelated pairs.
AGREED = 0.6
BENT_GAIN = 0.1  # And the least rise over the move's agreement.


@dataclass(frozen=True)
class Start:
    """Where a fit's warp starts.

    Attributes:
        maps: ``(16, size, size)`` raw maps that only warp, or None for no warp.
        move: the move of the whole picture that was found, or None.
        bent: whether the start is that move (or none) bent region by region (:func:`local_warp`).
        subject: the move of the pair's one subject that the start carries it by, or None.
        free: ``(2, size, size)``, how much the fit may change each direction's warp at each pixel (0: it is
            held at the start; A->B on B's grid, then B->A on A's), or None where it may change it everywhere.
        round_trip: ``(size, size)`` on A's grid, how much each pixel counts in the fit's round trip (the
            consistency term of :func:`~diffmorph.ops.morph_loss`), or None where every pixel counts fully.
    """

    maps: torch.Tensor | None
    move: Alignment | None
    bent: bool = False
    subject: SubjectMove | None = None
    free: torch.Tensor | None = None
    round_trip: torch.Tensor | None = None


def describe(move: Alignment | None, bent: bool, subject: SubjectMove | None = None, how: str = "auto"
             ) -> str | None:
    """One line for a log of where a warp started (see :class:`Start`), or None where it started from nothing.

    ``how`` is the ``align`` setting: where it asked for the subject's move and none was found, the line says so.
    """
    if subject is not None or how == "subject":
        line = subject.describe() if subject else "aligned: no one subject stands out of both images alike"
        return f"{line}; {move.describe().removeprefix('aligned: ')}" if move else line
    if not bent:
        return move.describe() if move else None
    return f"{move.describe()}, then bent region by region" if move else "aligned: bent region by region"


def starting_maps(a: torch.Tensor, b: torch.Tensor, how: str, warp_scale: float, size: int) -> Start:
    """The start of a fit for the config's ``align`` setting.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size.
        how: ``"none"`` (no warp), ``"global"`` (the move of the whole picture, where one is found),
            ``"local"`` (that move, then bent region by region, see :func:`local_warp`) or ``"auto"``
            (the move, bent where bending makes the two pictures' structure agree, see the module's text).
        warp_scale: the config's ``warp_scale``.
        size: the maps' side.

    Returns:
        A :class:`Start`: its maps are None where the warp starts from nothing.
    """
    if how == "none":
        return Start(None, None)
    # The move is looked for in the images squashed to SIZE and bending squashes them to LOCAL_SIZE:
    # squash them once (the searches' own resizes then pass), to LOCAL_SIZE only where bending may run.
    small = [resize(image, SIZE, SIZE, antialias=True) for image in (a, b)]
    found = find_alignment(*small)
    moved = Start(warp_prior(found, warp_scale, size, size) if found else None, found)
    if how == "global":
        return moved
    if how == "subject":
        return _subject_start(a, b, found, warp_scale, size) or moved
    fine = [resize(image, LOCAL_SIZE, LOCAL_SIZE, antialias=True) for image in (a, b)]
    if how == "local":
        return _bent_start(local_warp(*fine, found), found, warp_scale, size)
    agreement = _carried_agreement(*small, _move_flows(found, SIZE))
    if agreement >= EXPLAINED:
        return moved
    # Decided on the levels up to SIZE (a third of the time of all of them); the finer ones only where kept,
    # going on from there.
    fields = _bent_fields(*fine, found)
    bent = _nth(fields, DECIDING_LEVELS)
    if _carried_agreement(*small, resize(bent, SIZE, SIZE, antialias=True)) < max(AGREED, agreement + BENT_GAIN):
        return _subject_start(a, b, found, warp_scale, size) or moved
    finest = _nth(fields, len(LOCAL_LEVELS) - DECIDING_LEVELS)  # the levels left, after those decided on
    return _bent_start(finest, found, warp_scale, size)


def _bent_start(flows: torch.Tensor, found: Alignment | None, warp_scale: float, size: int) -> Start:
    """The :class:`Start` of :func:`local_warp`'s ``flows``, as raw maps of side ``size``."""
    return Start(_warp_maps(flows, warp_scale, size), found, bent=True)


def _warp_maps(flows: torch.Tensor, warp_scale: float, size: int) -> torch.Tensor:
    """Raw maps of side ``size`` that only warp, by ``(2, 2, S, S)`` backward flows in fractions of the frame."""
    flows = resize(flows, size, size, antialias=True) / warp_scale  # (2, 2, size, size)
    maps = torch.zeros(16, size, size)
    maps[6:8], maps[14:16] = flows[0], flows[1]
    return maps


def _subject_start(a: torch.Tensor, b: torch.Tensor, found: Alignment | None, warp_scale: float, size: int
                   ) -> Start | None:
    """The :class:`Start` that carries the pair's subject by its move (:func:`find_subject_move`) and the rest
    by the move of the whole picture ``found`` (or none), as raw maps of side ``size``; None where the pair
    has no such subject, or where the move of the whole picture carries it as well (it moved with the scene:
    the subject's move, a zoom and a shift only, would leave out the turn)."""
    subject = find_subject_move(a, b)
    if subject is None:
        return None
    move, *masks = subject
    background = _move_flows(found, SUBJECT_SIZE)  # (2, 2, S, S): zero where no move was found
    if found is not None:
        carried = warp(masks[0].float()[None, None], background[0:1] * SUBJECT_SIZE)[0, 0] > 0.5
        if _overlap(carried, masks[1]) >= SUBJECT_OVERLAP:
            return None
    small = [resize(image, SUBJECT_SIZE, SUBJECT_SIZE, antialias=True) for image in (a, b)]
    cores = [_subject_core(image, mask) for image, mask in zip(small, masks, strict=True)]
    if all(core is None for core in cores):  # both have an edge: carried wholly, up to it
        weights = _subject_weights(move, tuple(masks), SUBJECT_SIZE)
    else:  # a glow fades out from either: only the cores wholly (a subject with an edge is its own core)
        cores = tuple(mask if core is None else core for core, mask in zip(cores, masks, strict=True))
        weights = _subject_weights(move, tuple(masks), SUBJECT_SIZE, cores)
    flows = _subject_flows(move, SUBJECT_SIZE, weights, background)
    weights = resize(weights, size, size)[:, 0]  # (2, size, size)
    # The fit holds the subject's move and refines the rest. Left free, it bent the subject out of shape to
    # fetch colours from elsewhere (the demo's moon grew a tail, the ball tore). Ground of A that B's subject
    # covers has nowhere to go and back (the B->A warp leaves it in place, the A->B warp fetches B's subject
    # there from A's), so the fit's round trip leaves it out; counted, it pulled the subject's move apart.
    return Start(_warp_maps(flows, warp_scale, size), found, subject=move, free=1 - weights,
                 round_trip=1 - weights[0] * (1 - weights[1]))


def _move_flows(alignment: Alignment | None, size: int) -> torch.Tensor:
    """Both directions' backward flows of a move (none: zero), ``(2, 2, size, size)`` in fractions of the frame."""
    if alignment is None:
        return torch.zeros(2, 2, size, size)
    return warp_prior(alignment, 1.0, size, size).view(2, 8, size, size)[:, 6:8]


def _carried_agreement(a: torch.Tensor, b: torch.Tensor, flows: torch.Tensor) -> float:
    """The mean over both directions of :func:`_agreement` after each image is carried by its flow.

    Args:
        a, b: ``(1, 3, S, S)``.
        flows: ``(2, 2, S, S)`` from :func:`local_warp` or :func:`_move_flows`.
    """
    size = a.shape[-1]
    carried = warp(torch.cat((a, b)), flows * size)
    return (_agreement(carried[0:1], structure(b)) + _agreement(carried[1:2], structure(a))) / 2


def local_warp(a: torch.Tensor, b: torch.Tensor, alignment: Alignment | None, *, levels: int | None = None
               ) -> torch.Tensor:
    """Backward flows that carry A's content onto B's and B's onto A's, region by region.

    Where B shows A's subject changed in shape (another face, another pose), no one move fits the whole
    picture. Here a smooth field per direction (control points, interpolated bicubically) is fitted,
    coarse to fine, to raise the correlation of the two greyscales over small windows, which a change of
    colour or contrast does not affect (see :func:`_local_agreement`); a bending penalty keeps it smooth
    and a second one keeps it from folding content over itself. It starts from ``alignment`` where there
    is one.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]``, compared squashed to :data:`LOCAL_SIZE` x
            :data:`LOCAL_SIZE`.
        alignment: the move of the whole picture to start from, or None.
        levels: how many of :data:`LOCAL_LEVELS` to go through, coarsest first; all by default.

    Returns:
        ``(2, 2, LOCAL_SIZE, LOCAL_SIZE)``: the A->B flow, then the B->A flow, ``(dy, dx)`` in fractions of
        the frame's height and width, with ``b(p) ≈ a(p - flow_ab(p))`` as in :func:`diffmorph.ops.warp`.
    """
    return _nth(_bent_fields(a, b, alignment), levels or len(LOCAL_LEVELS))


def _bent_fields(a: torch.Tensor, b: torch.Tensor, alignment: Alignment | None) -> Iterator[torch.Tensor]:
    """:func:`local_warp`'s flows after each of :data:`LOCAL_LEVELS` in turn, each level going on from the last."""
    size = LOCAL_SIZE
    a, b = resize(a, size, size, antialias=True), resize(b, size, size, antialias=True)
    moving, fixed = luma(torch.cat((a, b))), luma(torch.cat((b, a)))  # (2, 1, S, S): A onto B, B onto A
    start = _move_flows(alignment, size)
    control = None
    for resolution, points, steps in LOCAL_LEVELS:
        level_moving = resize(moving, resolution, resolution, antialias=True)
        level_fixed = resize(fixed, resolution, resolution, antialias=True)
        weights = _contrast(level_fixed)
        level_start = resize(start, resolution, resolution, antialias=True) * resolution  # pixels
        control = torch.zeros(2, 2, points, points) if control is None else F.interpolate(
            control, size=(points, points), mode="bilinear", align_corners=True)
        control = control.detach().requires_grad_(True)  # (2, 2, P, P): fractions of the frame
        # Adam moves each point by about its rate at every step: a pixel's worth at this level at most.
        optimizer = torch.optim.Adam([control], lr=min(LOCAL_RATE, 1 / resolution))
        with torch.enable_grad():  # left before each yield: the caller's grad mode is its own
            for _ in range(steps):
                flow = F.interpolate(control, size=(resolution, resolution), mode="bicubic",
                                     align_corners=True) * resolution + level_start  # (2, 2, R, R) pixels
                agreement = _local_agreement(warp(level_moving, flow), level_fixed, weights).mean()
                bending = LOCAL_SMOOTH * _stretching(control)
                if points <= LOCAL_CURVED_POINTS:
                    bending = bending + LOCAL_CURVE * _curving(control)
                else:
                    bending = bending + LOCAL_KINK * _kinking(control)
                folding = (LOCAL_LEAST_AREA - _area_change(flow)).clamp_min(0).square().mean()
                # Summed over the two directions, which are independent: each gets its own gradient.
                loss = 2 * (1 - agreement + bending + LOCAL_FOLD * folding)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        yield F.interpolate(control.detach(), size=(size, size), mode="bicubic", align_corners=True) + start


def _stretching(control: torch.Tensor) -> torch.Tensor:
    """How much a field of control points ``(N, 2, P, P)`` (fractions of the frame) changes across the frame:
    the mean squared first derivative, the same for one field sampled by any number of points.

    >>> float(_stretching(torch.ones(1, 2, 4, 4)))
    0.0
    """
    points = control.shape[-1]
    return sum(control.diff(dim=d).square().mean() for d in (2, 3)) * points * points


def _curving(control: torch.Tensor) -> torch.Tensor:
    """How far a field of control points ``(N, 2, P, P)`` is from one affine map: the mean squared second
    derivative (a thin plate's bending energy), so a zoom, turn or shift costs nothing; per point count as
    :func:`_stretching`.

    >>> ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    >>> affine = torch.stack((0.1 * ys - 0.2 * xs, 0.3 * xs))[None]
    >>> round(float(_curving(affine)), 6), round(float(_curving(affine ** 2)), 2)
    (0.0, 5.43)
    """
    points = control.shape[-1]
    along = sum(control.diff(n=2, dim=d).square().mean() for d in (2, 3))
    across = control.diff(dim=2).diff(dim=3).square().mean()
    return (along + 2 * across) * points**4


def _kinking(control: torch.Tensor) -> torch.Tensor:
    """:func:`_curving` made robust: the mean over the points of ``sqrt(c^2 + k^2) - k``, where ``c`` is the
    size of the field's second derivative at a point and ``k`` is :data:`LOCAL_KINK_SCALE`, so strong curving
    costs in proportion to its size rather than its square. A crease along one line (a depth edge) costs 2.5
    times as much as the same change of slope spread evenly over the field; :func:`_curving` makes it 10
    times as dear.

    >>> x = torch.arange(12.0)
    >>> crease = (x - 5).abs().expand(1, 2, 12, 12) / 10
    >>> spread = (x - 5).square().expand(1, 2, 12, 12) / 100
    >>> round(float(_curving(crease) / _curving(spread)), 1), round(float(_kinking(crease) / _kinking(spread)), 1)
    (10.0, 2.5)
    """
    points = control.shape[-1]
    inner = control[..., 1:-1, 1:-1]
    along_y = control[..., 2:, 1:-1] - 2 * inner + control[..., :-2, 1:-1]
    along_x = control[..., 1:-1, 2:] - 2 * inner + control[..., 1:-1, :-2]
    across = control.diff(dim=2).diff(dim=3)[..., : points - 2, : points - 2]
    size = (along_y.square() + along_x.square() + 2 * across.square()).sum(dim=1).sqrt() * points * points
    return ((size.square() + LOCAL_KINK_SCALE**2).sqrt() - LOCAL_KINK_SCALE).mean()


def _nth(fields: Iterator[torch.Tensor], count: int) -> torch.Tensor:
    """The ``count``-th of ``fields`` (from 1), leaving the iterator just after it."""
    return next(itertools.islice(fields, count - 1, None))


def _local_agreement(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """How well ``x`` matches ``y``, both ``(N, 1, H, W)``: their correlation over a :data:`LOCAL_WINDOW`
    square around each pixel, averaged with ``weights`` (:func:`_contrast` of ``y``): ``(N,)``.

    Correlation is normalised: a window of faint texture (a floor, a wall, a sky's gradient) would count
    as much as one that holds a strong edge, though where it matches is far less certain, and such
    windows pulled the warp off true (measured on a stereo pair with known disparity: mean error 4.4 px
    counted by contrast against 6.0 px counted alike). Windows of no contrast at all count for nothing
    either way (their correlation is 0).
    """
    mx, my = _box_mean(x), _box_mean(y)
    vx, vy, cxy = _box_mean(x * x) - mx * mx, _box_mean(y * y) - my * my, _box_mean(x * y) - mx * my
    correlation = cxy / torch.sqrt(vx.clamp_min(0) * vy.clamp_min(0) + 1e-4)
    return (correlation * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)


def _contrast(image: torch.Tensor) -> torch.Tensor:
    """The standard deviation of ``(N, 1, H, W)`` ``image`` over a :data:`LOCAL_WINDOW` square around each pixel."""
    mean = _box_mean(image)
    return (_box_mean(image * image) - mean * mean).clamp_min(0).sqrt()


def _box_mean(image: torch.Tensor) -> torch.Tensor:
    """The mean over a :data:`LOCAL_WINDOW` square around each pixel of ``(N, 1, H, W)`` ``image``."""
    # A box filter is separable, also at the borders, where only the pixels inside are counted.
    pad = LOCAL_WINDOW // 2
    image = F.avg_pool2d(image, (LOCAL_WINDOW, 1), stride=1, padding=(pad, 0), count_include_pad=False)
    return F.avg_pool2d(image, (1, LOCAL_WINDOW), stride=1, padding=(0, pad), count_include_pad=False)


def _area_change(flow: torch.Tensor) -> torch.Tensor:
    """How a backward flow ``(N, 2, H, W)`` in pixels scales area where it samples, ``det(I - grad flow)``:
    ``(N, H - 1, W - 1)``; at or below 0 the warp folds content over itself."""
    d_dy, d_dx = flow[..., 1:, :-1] - flow[..., :-1, :-1], flow[..., :-1, 1:] - flow[..., :-1, :-1]
    return (1 - d_dy[:, 0]) * (1 - d_dx[:, 1]) - d_dx[:, 0] * d_dy[:, 1]
