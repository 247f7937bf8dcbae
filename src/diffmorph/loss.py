"""The objective of a fit: both directions reproduce the other image, and the two warps undo each other.

Shapes follow the conventions of :mod:`diffmorph.ops`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffmorph.ops import MapScales, apply_maps, flow_from_warp_map, warp

MAPPING_WEIGHT = 0.3  # weight of each direction's reproduction error in the objective (the round trip's is 1)


def morph_loss(net_input: torch.Tensor, a: torch.Tensor, b: torch.Tensor, maps: torch.Tensor,
               scales: MapScales, *, colour_weight: float = 0.0,
               round_trip_weights: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """The objective of a fit, for each of ``K`` independent pairs.

    ``MSE(M, warp(warp(M, flow_AB), flow_BA)) + 0.3 MSE(apply(A, maps_AB), B) + 0.3 MSE(apply(B, maps_BA), A)``:
    both directions reproduce the other image, and warping forth and back returns the network input
    ``M`` (the warp-consistency term, which keeps the two flows inverse to each other). That is the
    classic objective. A coarse-to-fine fit passes blurred ``a`` and ``b`` early on, and a
    ``colour_weight`` that adds ``colour_weight * mean(mult² + add²)`` over both directions' raw colour
    maps: with colour held back, only the warp can lower the error.

    Args:
        net_input: ``(K, 8, S, S)`` network inputs ``M``: coordinate grid, ``0.1 A``, ``0.1 B``.
        a, b: ``(K, 3, S, S)`` images in ``[-1, 1]`` that the maps must reproduce.
        maps: ``(K, 16, S, S)`` both directions' maps at the working resolution.
        colour_weight: weight of the penalty on the colour maps; 0 (classic) leaves it out.
        round_trip_weights: per pair, None or ``(1, S, S)``: how much each pixel of A's grid counts in the
            warp-consistency term (the mean of the weighted squares); None counts every pixel fully.

    Returns:
        ``(K,)``: the loss of each pair (sum them to fit all at once: each pair's gradient is its own).
    """
    a_to_b, b_to_a = mapping_errors(a, b, maps, scales)
    loss = (round_trip_error(net_input, maps, scales, round_trip_weights)
            + MAPPING_WEIGHT * a_to_b + MAPPING_WEIGHT * b_to_a)
    if colour_weight > 0.0:
        colour = torch.cat((maps[:, 0:6], maps[:, 8:14]), dim=1)  # (K, 12, S, S)
        loss = loss + colour_weight * colour.square().mean(dim=(1, 2, 3))
    return loss


def round_trip_error(net_input: torch.Tensor, maps: torch.Tensor, scales: MapScales,
                     weights: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """The warp-consistency term of :func:`morph_loss`: ``MSE(M, warp(warp(M, flow_AB), flow_BA))``, ``(K,)``.

    ``maps`` must be at ``net_input``'s size; ``weights`` as :func:`morph_loss`'s ``round_trip_weights``.
    """
    flow_ab, flow_ba = (flow_from_warp_map(warp_map, scales.warp)
                        for warp_map in by_direction(maps)[:, :, 6:8].unbind(1))  # (K, 2, S, S) each
    round_trip = warp(warp(net_input, flow_ab), flow_ba)
    consistency = _mse_each(round_trip, net_input)
    if weights is None:
        return consistency
    return torch.stack([consistency[k] if w is None else ((round_trip[k] - net_input[k]).square() * w).mean()
                        for k, w in enumerate(weights)])


def mapping_errors(a: torch.Tensor, b: torch.Tensor, maps: torch.Tensor, scales: MapScales
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``MSE(apply(A, maps_AB), B)`` and ``MSE(apply(B, maps_BA), A)``, ``(K,)`` each, the reproduction terms
    of :func:`morph_loss`; ``maps`` at the images' size."""
    pairs = a.shape[0]
    # Both directions as one batch: grid_sample parallelises over the batch on a CPU.
    directions = by_direction(maps).transpose(0, 1).flatten(0, 1)  # (2K, 8, S, S): every A->B, then every B->A
    mapped = apply_maps(torch.cat((a, b)), directions, scales)  # (2K, 3, S, S)
    return _mse_each(mapped[:pairs], b), _mse_each(mapped[pairs:], a)


def by_direction(maps: torch.Tensor) -> torch.Tensor:
    """``(K, 16, S, S)`` maps as ``(K, 2, 8, S, S)``: A->B, then B->A.

    A view, where slicing the channels would not be: the gradient of each slice is a zero tensor of all 16 maps,
    filled and added up.
    """
    return maps.unflatten(1, (2, 8))


def hint_errors(maps: torch.Tensor, hints: list[torch.Tensor | None], scales: MapScales) -> torch.Tensor:
    """Per pair, how far each direction's warp misses the hinted points: the mean over the points of the squared
    distance, in fractions of the frame, summed over both directions; ``(K,)`` (0 for a pair without hints).

    Args:
        maps: ``(K, 16, S, S)`` both directions' maps.
        hints: per pair, None or ``(N, 4)``: each point on A then its partner on B, as ``(ay, ax, by, bx)`` in
            fractions of the frame from its top-left corner.
    """
    errors = []
    for k, points in enumerate(hints):
        if points is None:
            errors.append(maps.new_zeros(()))
            continue
        errors.append(hint_misses(maps[k], points, scales.warp).square().sum(dim=-1).mean(dim=-1).sum())
    return torch.stack(errors)


def hint_misses(maps: torch.Tensor, hints: torch.Tensor, warp_scale: float) -> torch.Tensor:
    """How far each direction's warp misses each hint: ``(2, N, 2)``, (dy, dx) in fractions of the frame.

    A backward warp fetches: at B's point the A->B warp should fetch A's point, and at A's the B->A warp B's.
    Row 0 is where A->B fetches less A's point, row 1 where B->A fetches less B's.

    Args:
        maps: ``(16, h, w)`` both directions' maps.
        hints: ``(N, 4)`` as :func:`hint_errors` takes them.
    """
    a, b = hints[:, 0:2], hints[:, 2:4]
    fetched_by_b = b - sample_points(maps[6:8], b) * warp_scale
    fetched_by_a = a - sample_points(maps[14:16], a) * warp_scale
    return torch.stack((fetched_by_b - a, fetched_by_a - b))


def sample_points(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``field`` ``(C, h, w)`` at ``points`` ``(N, 2)``, (y, x) in fractions of the frame with pixel centres at
    ``(i + 0.5) / n``, bilinearly, the border repeated: ``(N, C)``."""
    grid = (points.flip(-1) * 2.0 - 1.0).view(1, -1, 1, 2).to(field.dtype)  # grid_sample takes (x, y) in [-1, 1]
    return F.grid_sample(field[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, :, 0].T


def _mse_each(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(K, ...)`` twice -> ``(K,)``: the mean square error of each item.

    One ``mse_loss`` per item, so a single pair's loss and gradient are bit for bit what they were
    before pairs were batched (and the fits in our published figures reproduce exactly).
    """
    return torch.stack([F.mse_loss(x[k:k + 1], y[k:k + 1]) for k in range(x.shape[0])])
