"""Carrying one subject: a compact thing that stands out of a plain ground, moved far over ground that changed.

A ball rolled onto other ground, or the sun setting where the moon rises, has nothing around it for a search
of the whole picture or a local bend to match. Where each image has one such subject (:func:`subject_mask`:
colours the frame's border does not show) and the two agree in shape, :func:`find_subject_move` finds how it
moved and grew, and :func:`subject_start` carries that subject alone while the ground keeps the picture's move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from diffmorph.ops import gaussian_blur, resize, warp
from diffmorph.start.flows import in_pixels, warp_maps
from diffmorph.start.move import Alignment, describe_shift, move_flows


@dataclass(frozen=True)
class SubjectParams:
    """What makes a region a subject, and how it is carried (evidence in docs/method.md)."""

    size: int = 64  # both images are searched squashed to this square size
    contrast: float = 0.1  # least colour distance (RGB in [-1, 1]) from the border's colours: grounds sit below 0.04
    share: float = 0.8  # the subject holds at least this share of all outstanding pixels' distance: one, not many
    fill: float = 0.65  # it covers at least this share of its bounding box: compact, not a ragged piece of a photo
    standout: float = 10.0  # its mean distance is this many times the rest's: drawn subjects 21+, photo pieces 3-16
    area: tuple[float, float] = (0.01, 0.35)  # its share of the frame: smaller is noise, larger is no subject
    resize: tuple[float, float] = (0.5, 2.0)  # least and most size of B's subject over A's
    overlap: float = 0.6  # least intersection over union of B's subject and A's carried: the same shape
    scales: tuple[float, ...] = (0.8, 0.87, 0.93, 1.0, 1.07, 1.15, 1.25)  # factors on the area ratio tried
    shifts: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)  # pixels tried around the centres' move, each way
    fades: float = 0.025  # mean distance two pixels outside from which a subject fades into its ground (a glow)
    core: float = 0.5  # a glowing subject's core stands out at least this share of its most outstanding pixel
    soft: float = 4.0  # pixels over which a glowing subject's carried share falls off past its core


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
        parts = [f"moves {moves}"] if (moves := describe_shift(dy, dx)) else ["stays"]
        if round(self.scale, 1) != 1.0:
            parts.append(f"{self.scale:.1f}x {'larger' if self.scale > 1 else 'smaller'}")
        return f"aligned: the subject {', '.join(parts)}"


@dataclass(frozen=True)
class SubjectStart:
    """What :func:`subject_start` gives the fit.

    Attributes:
        maps: ``(16, size, size)`` raw maps that only warp.
        move: the subject's move.
        free: ``(2, size, size)``, how much the fit may change each direction's warp (0 on the subject).
        round_trip: ``(size, size)``, how much each pixel of A counts in the fit's round trip.
    """

    maps: torch.Tensor
    move: SubjectMove
    free: torch.Tensor
    round_trip: torch.Tensor


def subject_mask(image: torch.Tensor, params: SubjectParams = SubjectParams()) -> torch.Tensor | None:
    """Where the one subject of ``image`` is: a region whose colours the frame's border does not show.

    Each pixel's distance (lightly blurred, RGB) from the nearest colour of the border's pixels says how much
    it stands out from the background; the pixels at least ``params.contrast`` away fall into connected
    regions, and the one holding the most distance is the subject. There is none where that region touches
    the border, holds less than ``params.share`` of all the distance, covers less than ``params.fill`` of its
    bounding box, stands out less than ``params.standout`` times as much as the rest, or covers an area
    outside ``params.area``.

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
    standing = (distance >= params.contrast).float()[None, None]
    standing = F.max_pool2d(-F.max_pool2d(-standing, 3, 1, 1), 3, 1, 1)[0, 0] > 0.5
    labels = _regions(standing)
    if labels.max() < 0:
        return None
    mass = torch.zeros(labels.numel(), dtype=distance.dtype).index_add_(
        0, labels.flatten().clamp_min(0), distance.flatten() * (labels.flatten() >= 0))
    mask = labels == mass.argmax()
    area = float(mask.float().mean())
    if (torch.cat((mask[0], mask[-1], mask[:, 0], mask[:, -1])).any() or mass.max() < params.share * mass.sum()
            or not params.area[0] <= area <= params.area[1]):
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    box = float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    if float(mask.sum()) < params.fill * box or distance[mask].mean() < params.standout * distance[~mask].mean():
        return None
    return mask


def find_subject_move(a: torch.Tensor, b: torch.Tensor, params: SubjectParams = SubjectParams()
                      ) -> tuple[SubjectMove, torch.Tensor, torch.Tensor] | None:
    """How the one subject of A sits in B, where each has one (see :func:`subject_mask`) and they agree in shape.

    The move scales A's subject about its centre to B's subject's area and puts it on B's subject's centre;
    it is kept where B's subject overlaps A's so carried by at least ``params.overlap`` and its size changes
    within ``params.resize``.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size, searched squashed to ``params.size``.

    Returns:
        The :class:`SubjectMove` and both subjects' masks (``(S, S)`` bool), or None.
    """
    size = params.size
    masks = [subject_mask(resize(image, size, size, antialias=True), params) for image in (a, b)]
    if masks[0] is None or masks[1] is None:
        return None
    # The centres and the ratio of the areas give a first move; the one of the moves around it that makes the
    # two masks overlap best is kept (a shadow or a highlight that only one image counts shifts the centres).
    (ay, ax), (by, bx) = _centre(masks[0]), _centre(masks[1])
    ratio = math.sqrt(float(masks[1].sum()) / float(masks[0].sum()))
    if not params.resize[0] <= ratio <= params.resize[1]:
        return None
    candidates = [SubjectMove(ratio * factor, (ay, ax), (by + dy / size, bx + dx / size), 0.0)
                  for factor in params.scales for dy in params.shifts for dx in params.shifts]
    flows = torch.stack([subject_flows(move, size)[0] for move in candidates]) * size  # (N, 2, S, S) pixels
    overlaps = overlap(warp(masks[0].float().expand(len(candidates), 1, size, size), flows)[:, 0] > 0.5, masks[1])
    best = int(overlaps.argmax())
    if overlaps[best] < params.overlap:
        return None
    return replace(candidates[best], overlap=float(overlaps[best])), masks[0], masks[1]


def subject_start(a: torch.Tensor, b: torch.Tensor, found: Alignment | None, warp_scale: float, size: int,
                  params: SubjectParams = SubjectParams()) -> SubjectStart | None:
    """The start that carries the pair's subject by its move and the rest by the picture's move ``found``.

    Args:
        a, b: ``(1, 3, H, W)`` in ``[-1, 1]``.
        found: the move of the whole picture, or None.
        warp_scale: the config's ``warp_scale``.
        size: the maps' side.

    Returns:
        A :class:`SubjectStart`, or None where the pair has no such subject, or where the picture's move carries
        it as well (it moved with the scene: the subject's move, a zoom and a shift only, would leave out a turn).
    """
    subject = find_subject_move(a, b, params)
    if subject is None:
        return None
    move, *masks = subject
    background = move_flows(found, params.size)  # (2, 2, S, S): zero where no move was found
    if found is not None:
        carried = warp(masks[0].float()[None, None], in_pixels(background[0:1]))[0, 0] > 0.5
        if overlap(carried, masks[1]) >= params.overlap:
            return None
    small = [resize(image, params.size, params.size, antialias=True) for image in (a, b)]
    cores = [_subject_core(image, mask, params) for image, mask in zip(small, masks, strict=True)]
    if all(core is None for core in cores):  # both have an edge: carried wholly, up to it
        weights = _subject_weights(move, tuple(masks), params.size, params)
    else:  # a glow fades out from either: only the cores wholly (a subject with an edge is its own core)
        cores = tuple(mask if core is None else core for core, mask in zip(cores, masks, strict=True))
        weights = _subject_weights(move, tuple(masks), params.size, params, cores)
    flows = subject_flows(move, params.size, weights, background)
    weights = resize(weights, size, size)[:, 0]  # (2, size, size)
    # The fit holds the subject's move and refines the rest: left free, it bends the subject out of shape to
    # fetch colours from elsewhere. Ground of A that B's subject covers has nowhere to go and back, so the
    # fit's round trip leaves it out; counted, it pulls the subject's move apart.
    return SubjectStart(warp_maps(flows, warp_scale, size), move, free=1 - weights,
                        round_trip=1 - weights[0] * (1 - weights[1]))


def subject_flows(move: SubjectMove, size: int, weights: torch.Tensor | None = None,
                  background: torch.Tensor | None = None) -> torch.Tensor:
    """Start flows that carry A's subject onto B's and B's onto A's.

    With ``weights`` (:func:`_subject_weights`), each direction moves its pixels by the move in that share
    and by ``background`` (none: zero) in the rest; without, it moves the whole frame.

    Returns:
        ``(2, 2, size, size)`` (see :mod:`diffmorph.start.flows`).
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


def overlap(masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each of ``(..., S, S)`` bool ``masks`` with ``target``: ``(...)``."""
    return (masks & target).sum(dim=(-2, -1)) / (masks | target).sum(dim=(-2, -1))


def _border_distance(image: torch.Tensor) -> torch.Tensor:
    """``(S, S)``: each pixel's colour distance (lightly blurred, RGB) from the nearest colour of the frame's
    border, for an ``(1, 3, S, S)`` image."""
    colours = gaussian_blur(image, 1.0)[0]  # (3, S, S)
    border = torch.cat((colours[:, 0], colours[:, -1], colours[:, 1:-1, 0], colours[:, 1:-1, -1]), dim=1)
    return torch.cdist(colours.flatten(1).T, border.T).amin(dim=1).view(colours.shape[1:])


def _subject_core(image: torch.Tensor, mask: torch.Tensor, params: SubjectParams) -> torch.Tensor | None:
    """For a subject (``mask`` of ``image``) that fades into its ground, as a glow does, the pixels that stand
    out at least ``params.core`` times as much as its most outstanding one (the sun's disc, not its glow); None
    for a subject with an edge (a ball), whose distance has fallen to the ground's two pixels outside it."""
    distance = _border_distance(image)
    grown = [F.max_pool2d(mask.float()[None, None], 2 * k + 1, 1, k)[0, 0] > 0.5 for k in (1, 2)]
    if float(distance[grown[1] & ~grown[0]].mean()) < params.fades:
        return None
    return mask & (distance >= params.core * distance[mask].max())


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


def _centre(mask: torch.Tensor) -> tuple[float, float]:
    """``(y, x)`` of an ``(S, S)`` mask's centroid, fractions of the frame (pixel centres at ``(i + 0.5) / S``)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    size = mask.shape[-1]
    return (float(ys.float().mean()) + 0.5) / size, (float(xs.float().mean()) + 0.5) / size


def _subject_weights(move: SubjectMove, masks: tuple[torch.Tensor, torch.Tensor], size: int, params: SubjectParams,
                     cores: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Where each direction's warp carries the subject: ``(2, 1, size, size)`` in ``[0, 1]``, A->B on B's grid.

    That is the pixels of the target's subject that the move fetches from the other's subject (grown by a
    pixel, the edge softened): where the two shapes differ, the move would carry pieces of the ground along.
    With ``cores``, for subjects that fade into their ground, only the cores are carried wholly and the share
    falls off smoothly towards the subjects' edges (``params.soft``), so that a glow stretches between the
    carried subject and the ground left in place rather than being cut at the edge.
    """
    def fetched(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        sources = torch.stack([pair[0].float(), pair[1].float()])[:, None]  # (2, 1, s, s): A's, then B's
        targets = torch.stack([pair[1].float(), pair[0].float()])[:, None]
        carried = warp(sources, subject_flows(move, sources.shape[-1]) * sources.shape[-1])
        return resize(targets * carried, size, size)

    pixel = size / params.size
    if cores is None:
        return gaussian_blur(F.max_pool2d(fetched(masks), 3, 1, 1), pixel)
    held = gaussian_blur(F.max_pool2d(fetched(cores), 3, 1, 1), pixel)
    return torch.maximum(held, gaussian_blur(fetched(masks), params.soft * pixel))
