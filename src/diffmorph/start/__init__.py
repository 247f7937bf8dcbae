"""Where a fit's warp starts: found before the fit, from the images themselves.

The fit is a descent on an image difference, whose gradient with respect to the warp only sees about a pixel
around each sample: content that moved further is recoloured rather than followed, and mid-morph it fades out
in one place and in at the other. So the warp starts from one of three guesses, each in its own module:

- :mod:`~diffmorph.start.move`: the move of the whole picture (a shift, a zoom and a turn);
- :mod:`~diffmorph.start.bend`: that move bent region by region, for a subject that changes shape;
- :mod:`~diffmorph.start.subject`: one compact subject carried across a ground that changed.

Whichever it is, :mod:`~diffmorph.start.matches` then finds where it makes the two pictures agree: a bend is kept
only there, and elsewhere the fit holds the warp where the start put it, so regions with no match crossfade
instead of swirling.

:func:`starting_maps` picks one by the config's ``align``; :func:`choose` is the ``auto`` decision. Each
module's tuned numbers are a frozen dataclass, gathered in :class:`StartParams`. Flows follow
:mod:`diffmorph.start.flows`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from diffmorph.ops import resize
from diffmorph.start.bend import BendParams, bent_fields, local_warp, nth
from diffmorph.start.flows import warp_maps
from diffmorph.start.matches import MatchParams, gated, holding, surely_matched, unmatched
from diffmorph.start.move import Alignment, MoveParams, carried_agreement, find_alignment, move_flows, warp_prior
from diffmorph.start.record import StartRecord, describe
from diffmorph.start.subject import SubjectMove, SubjectParams, subject_start

ALIGNS = ("auto", "global", "local", "subject", "none")


@dataclass(frozen=True)
class AutoParams:
    """When ``align="auto"`` keeps the move, bends it, or carries a subject (evidence in docs/method.md)."""

    explained: float = 0.95  # structure agreement after the move from which the move alone explains the pair
    agreed: float = 0.6  # least agreement after bending to keep the bend: most pairs of faces, few unrelated pairs
    bent_gain: float = 0.1  # and the least rise over the move's agreement
    # Least share of the structured frame that no move at all matches surely to be a subject that stays in place
    # on ground that changed (then the ground is held, not bent): a toy on other ground 0.17, a face and its
    # mirror image 0.09, two faces 0.06, unrelated landscapes 0.03.
    in_place: float = 0.13
    deciding_levels: int = 4  # the bend's levels (of BendParams.levels) the decision is taken on


@dataclass(frozen=True)
class StartParams:
    """Every tuned number of the start, one dataclass per part."""

    move: MoveParams = field(default_factory=MoveParams)
    bend: BendParams = field(default_factory=BendParams)
    subject: SubjectParams = field(default_factory=SubjectParams)
    auto: AutoParams = field(default_factory=AutoParams)
    match: MatchParams = field(default_factory=MatchParams)


@dataclass(frozen=True)
class Start:
    """Where a fit's warp starts.

    Attributes:
        maps: ``(16, size, size)`` raw maps that only warp, or None for no warp.
        move: the move of the whole picture that was found, or None.
        bent: whether the start is that move (or none) bent region by region.
        subject: the move of the pair's one subject that the start carries it by, or None.
        free: ``(2, size, size)``, how much the fit may change each direction's warp at each pixel (0: it is
            held at the start; A->B on B's grid, then B->A on A's; low where the start finds no match, see
            :mod:`.matches`), or None where it may change it everywhere.
        round_trip: ``(size, size)`` on A's grid, how much each pixel counts in the fit's round trip (the
            consistency term of :func:`~diffmorph.loss.morph_loss`), or None where every pixel counts fully.
        guide: one line on what the user's guidance (points, masks) does, or None.
        points: the point hints it carries, ``(ay, ax, by, bx)`` in fractions of the frame each.
    """

    maps: torch.Tensor | None
    move: Alignment | None
    bent: bool = False
    subject: SubjectMove | None = None
    free: torch.Tensor | None = None
    round_trip: torch.Tensor | None = None
    guide: str | None = None
    points: tuple[tuple[float, float, float, float], ...] = ()

    def record(self, align: str) -> StartRecord:
        """What this start is, without its maps, for the ``align`` setting it was found under."""
        return StartRecord(align, self.move, self.bent, self.subject, guide=self.guide, points=self.points)


def starting_maps(a: torch.Tensor, b: torch.Tensor, how: str, warp_scale: float, size: int,
                  params: StartParams = StartParams()) -> Start:
    """The start of a fit for the config's ``align`` setting.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size.
        how: one of :data:`ALIGNS`: ``"none"`` (no warp), ``"global"`` (the move of the whole picture, where
            one is found), ``"local"`` (that move, then bent), ``"subject"`` (the subject carried, else as
            global) or ``"auto"`` (:func:`choose`).
        warp_scale: the config's ``warp_scale``.
        size: the maps' side.

    Returns:
        A :class:`Start`: its maps are None where the warp starts from nothing. Except for ``"none"`` (the
        original method), its ``free`` holds the warp where the start finds no match (:mod:`.matches`).
    """
    if how == "none":
        return Start(None, None)
    return _respecting_matches(_found(a, b, how, warp_scale, size, params), a, b, warp_scale, size, params.match)


def _found(a: torch.Tensor, b: torch.Tensor, how: str, warp_scale: float, size: int, params: StartParams) -> Start:
    """:func:`starting_maps`' start before the regions it finds no match for are held."""
    # The move is looked for in the images squashed to the move's size and bending squashes them to its own:
    # squash them once (the searches' own resizes then pass), to the bend's only where bending may run.
    side = params.move.size
    small = [resize(image, side, side, antialias=True) for image in (a, b)]
    found = find_alignment(*small, params.move)
    moved = Start(warp_prior(found, warp_scale, size, size) if found else None, found)
    if how == "global":
        return moved
    if how == "subject":
        return _carrying(a, b, found, warp_scale, size, params) or moved
    fine = [resize(image, params.bend.size, params.bend.size, antialias=True) for image in (a, b)]
    if how == "local":
        return _bent(local_warp(*fine, found, params=params.bend), found, warp_scale, size)
    return choose(a, b, small, fine, found, warp_scale, size, params)


def choose(a: torch.Tensor, b: torch.Tensor, small: list[torch.Tensor], fine: list[torch.Tensor],
           found: Alignment | None, warp_scale: float, size: int, params: StartParams) -> Start:
    """The ``auto`` start: the move where it explains the pair, or where it matches only one part of it (a subject)
    and bending does not explain it either; else the bend where it makes the pictures agree; else the subject
    carried where both images have one; else the move.

    Args:
        a, b: the images; ``small`` and ``fine``: squashed to the move's and the bend's sizes.
        found: the move of the whole picture, or None.
    """
    auto, band, side = params.auto, params.move.structure_band, params.move.size
    moved = Start(warp_prior(found, warp_scale, size, size) if found else None, found)
    # 1. The move explains the pair: B is A's scene moved, zoomed or turned.
    before = carried_agreement(*small, move_flows(found, side), band)
    if before >= auto.explained:
        return moved
    # 2. Bending makes the structure agree, decided on the coarse levels (a third of the bend's time); the
    #    finer levels run only where the bend is kept, going on from there.
    fields = bent_fields(*fine, found, params.bend)
    bent = nth(fields, auto.deciding_levels)
    after = carried_agreement(*small, resize(bent, side, side, antialias=True), band)
    # 3. The move matches only part of the frame (one subject moved, or left in place, over ground that changed)
    #    and bending does not explain the pair either: that part moves, the rest is held (see
    #    _respecting_matches); bending would only pair the ground's textures piece by piece.
    if after < auto.explained and _matched_share(small, found, params.match) < params.match.scene and (
            found is not None or surely_matched(*small, move_flows(None, side), params.match) >= auto.in_place):
        return moved
    if after >= max(auto.agreed, before + auto.bent_gain):
        return _bent(nth(fields, len(params.bend.levels) - auto.deciding_levels), found, warp_scale, size)
    # 4. One subject in both, moved over ground that changed; 5. else the move (or nothing).
    return _carrying(a, b, found, warp_scale, size, params) or moved


def _bent(flows: torch.Tensor, found: Alignment | None, warp_scale: float, size: int) -> Start:
    return Start(warp_maps(flows, warp_scale, size), found, bent=True)


def _respecting_matches(start: Start, a: torch.Tensor, b: torch.Tensor, warp_scale: float, size: int,
                        params: MatchParams) -> Start:
    """``start`` kept where it makes the pictures agree; elsewhere its warp is the rigid move of the scene (none
    where the move found is only one subject's) and the fit holds it there (see :mod:`.matches`). A start that
    matches most of the frame is kept whole: the rest is where it is a little off, or content that enters at a
    border, which the fit settles (held, a bent photo lost 4 dB of fidelity and gained nothing to see). A carried
    subject's start is kept whole: holding its ground too made the demo's and the textured pair's middle frames
    worse (a torn ball, less detail)."""
    if start.subject is not None:  # the subject's start already says what is carried, what stays and what is held
        return start
    small = [resize(image, params.size, params.size, antialias=True) for image in (a, b)]
    flows = torch.zeros(2, 2, size, size)
    if start.maps is not None:
        flows = torch.stack((start.maps[6:8], start.maps[14:16])) * warp_scale  # fractions of the frame
    missing = unmatched(*small, flows, params)  # (2, S, S)
    if 1 - float(missing.mean()) >= params.settled:  # what it misses is its own imprecision, for the fit to settle
        return start
    free = holding(missing, size, params)
    rigid = move_flows(start.move, params.size)
    if start.move is not None and _matched_share(small, start.move, params) < params.scene:
        rigid = torch.zeros_like(rigid)  # the move is one subject's, not the scene's
    if start.maps is not None or rigid.any():
        flows = gated(flows, resize(rigid, size, size, antialias=True), missing)
        start = replace(start, maps=warp_maps(flows, warp_scale, size))
    return replace(start, free=free if start.free is None else start.free * free)


def _matched_share(small: list[torch.Tensor], move: Alignment | None, params: MatchParams) -> float:
    """The share of the frame that ``move`` finds a match for, or that shows no structure (``small``: the images
    at ``params.size``), before matched regions grow."""
    return 1 - float(unmatched(*small, move_flows(move, params.size), replace(params, grow=0)).mean())


def _carrying(a: torch.Tensor, b: torch.Tensor, found: Alignment | None, warp_scale: float, size: int,
              params: StartParams) -> Start | None:
    carried = subject_start(a, b, found, warp_scale, size, params.subject)
    if carried is None:
        return None
    return Start(carried.maps, found, subject=carried.move, free=carried.free, round_trip=carried.round_trip)


__all__ = ["ALIGNS", "Alignment", "AutoParams", "BendParams", "MatchParams", "MoveParams", "Start", "StartParams",
           "StartRecord", "SubjectMove", "SubjectParams", "choose", "describe", "starting_maps"]
