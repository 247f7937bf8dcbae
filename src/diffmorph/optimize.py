"""The fitting loop: gradient descent on one network so its maps turn A into B and B into A."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffmorph.adam import Adam, per_member
from diffmorph.config import MorphConfig
from diffmorph.device import uses_bf16
from diffmorph.errors import FitDivergedError
from diffmorph.loss import MAPPING_WEIGHT, hint_errors, mapping_errors, morph_loss, round_trip_error
from diffmorph.model import MAP_CHANNELS, MAP_SIZE, NET_INPUT_SIZE, WARP_CHANNELS, MapNet
from diffmorph.ops import MapScales, coordinate_grid, gaussian_blur, resize, scales_of
from diffmorph.start import Start, StartParams, StartRecord, starting_maps

ProgressCallback = Callable[[int, float], None]
"""Called as ``progress(steps_done, current_loss)`` while fitting."""


@dataclass(frozen=True)
class FitParams:
    """The fit's tuned numbers (evidence in docs/method.md)."""

    coarse_blur: float = 0.125  # coarse-to-fine: Gaussian sigma of the first level, a share of the working size
    coarse_levels: int = 6  # coarse-to-fine: blur levels, from coarse_blur down to none
    coarse_fraction: float = 0.25  # coarse-to-fine: share of the steps before the images are compared unblurred
    colour_hold: float = 1.0  # coarse-to-fine: weight of the colour-map penalty at the first step, falling to 0
    # A loss this many times the lowest so far is a spike: that pair goes back to its best state and its rate
    # is halved. One-step blips of up to 6x recover by themselves; a climb to 36x did not.
    spike: float = 10.0
    refine_lr: float = 0.02  # the refinement's Adam rate on the colour maps' raw values, annealed to 0
    refine_warp_share: float = 0.25  # the warp maps' share of that rate: 1/4000 of the frame a step
    refine_zoom: int = 2  # the refinement compares the images at this many times the working size
    # Side of the network's input where the maps are refined after: its 54 x 54 maps, upsampled to 84 x 84, are
    # the smooth part that the refinement sharpens; 0.44 of the original 96's arithmetic, at about the same fidelity.
    refined_net_side: int = 66
    # Weight of the point hints' term: a hinted point missed by 1 % of the frame costs about what a fit's final
    # reproduction error does, so the warp follows the hints without tearing the images to reach them.
    hint_weight: float = 10.0
    adam_eps: float = 1e-7  # Keras' default, as in the original
    # Steps between reads of the losses from the device (progress, divergence checks). Reading waits for the
    # device to finish: free on a CPU, a stall of a GPU's queue. 0: every step on a CPU, every 25 elsewhere.
    read_every: int = 0

    def refine_side(self, size: int) -> int:
        """Side in pixels of the refinement's working size, for a fit at ``size``."""
        return self.refine_zoom * size

    def net_side(self, refine: int) -> int:
        """Side in pixels of the network's input: the original's 96, or ``refined_net_side`` where ``refine``
        steps refine its maps after.

        >>> FitParams().net_side(0), FitParams().net_side(100)
        (96, 66)
        """
        return self.refined_net_side if refine > 0 else NET_INPUT_SIZE


@dataclass(frozen=True)
class FitResult:
    """What a fit produces.

    Attributes:
        maps: ``(16, 84, 84)`` float32 raw maps on the CPU (A->B channels 0-7, B->A 8-15); resize
            them bilinearly to any resolution to apply them.
        losses: the loss at every step, before that step's update: the network's steps, then the
            refinement's (see :func:`_refine`; against sharper images, so its first is higher).
        seconds: wall time of the fit.
        start: what the warp started from (see :mod:`diffmorph.start`).
    """

    maps: torch.Tensor
    losses: list[float]
    seconds: float
    start: StartRecord


def one_cycle(step: int, total: int, peak: float) -> tuple[float, float]:
    """Learning rate and Adam's beta1 at ``step`` of a one-cycle schedule of ``total`` steps.

    The rate warms up from ``peak / 25`` to ``peak`` over the first 30 % of the steps, then anneals to
    ``peak / 250000``, both along cosines; beta1 moves the other way between 0.95 and 0.85. These are
    the defaults of PyTorch's ``OneCycleLR`` (so fits made with it are reproduced).

    >>> [tuple(round(v, 5) for v in one_cycle(k, 10, 6e-3)) for k in (0, 2, 9)]
    [(0.00024, 0.95), (0.006, 0.85), (0.0, 0.95)]
    """
    start, low = peak / 25.0, peak / 25.0 / 1e4
    warm_end = 0.3 * total - 1.0
    if step <= warm_end:
        begin, end, fraction, beta_begin, beta_end = start, peak, step / warm_end, 0.95, 0.85
    else:
        begin, end, fraction, beta_begin, beta_end = peak, low, (step - warm_end) / (total - 1 - warm_end), 0.85, 0.95
    cosine = (math.cos(math.pi * fraction) + 1.0) / 2.0
    return end + (begin - end) * cosine, beta_end + (beta_begin - beta_end) * cosine


def coarse_to_fine(step: int, total: int, params: FitParams = FitParams()) -> tuple[float, float]:
    """Blur and colour-map penalty at ``step`` of a coarse-to-fine fit of ``total`` steps.

    The gradient of an image difference with respect to a warp only sees about a pixel around each
    sample, so a plain fit cannot find content that moved further: it recolours instead, and the
    morph shows the content fading out in one place and in at the other. Blurring both images
    widens that reach to the blur's size, and holding the colour maps back leaves the warp as the
    only way to lower the error. Over the first ``params.coarse_fraction`` of the steps the blur steps
    down through ``params.coarse_levels`` levels (quadratically, so the fine levels get more steps of
    their own sigma) and the penalty falls linearly; after that the fit is the classic one, with
    the warp already in place, so colour maps fix what the warp cannot. It does not always find the
    move: a fit is a descent from a random start, and on some pairs the classic one aligns better.

    Returns:
        ``(sigma, colour_weight)``: the blur as a fraction of the working size, and the weight of
        the colour-map penalty (see :func:`~diffmorph.loss.morph_loss`).

    >>> [tuple(round(v, 4) for v in coarse_to_fine(k, 100)) for k in (0, 12, 24, 25, 99)]
    [(0.125, 1.0), (0.0556, 0.52), (0.0035, 0.04), (0.0, 0.0), (0.0, 0.0)]
    """
    progress = min(1.0, step / max(1.0, params.coarse_fraction * total))
    level = min(params.coarse_levels, int(progress * params.coarse_levels))
    return params.coarse_blur * (1.0 - level / params.coarse_levels) ** 2, params.colour_hold * (1.0 - progress)


def fit_maps(a: torch.Tensor, b: torch.Tensor, config: MorphConfig, device: torch.device, *,
             progress: ProgressCallback | None = None, params: FitParams = FitParams(),
             start_params: StartParams = StartParams()) -> FitResult:
    """Fit the maps of one pair.

    Args:
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]`` of the same size, on any device; they are
            squashed to the square working resolution ``config.size`` for the fit.
        config: a validated config; uses size, steps, schedule, lr, grad_clip, precision, seed, objective
            and the map scales.
        device: where to fit.
        progress: optional callback, see :data:`ProgressCallback`.

    Returns:
        A :class:`FitResult`.

    Raises:
        FitDivergedError: the loss became NaN or infinite.
    """
    return fit_batch([(a, b)], config, device, progress=progress, params=params, start_params=start_params)[0]


def find_starts(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], config: MorphConfig,
                params: StartParams = StartParams()) -> list[Start]:
    """Where each pair's warp starts under ``config.align``, found on the CPU (small FFTs, a small fit) so that
    every device finds the same."""
    return [starting_maps(a.cpu().float(), b.cpu().float(), config.align, config.warp_scale, MAP_SIZE, params)
            for a, b in pairs]


def fit_batch(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], config: MorphConfig, device: torch.device, *,
              progress: ProgressCallback | None = None, params: FitParams = FitParams(),
              start_params: StartParams = StartParams(), starts: Sequence[Start] | None = None,
              hints: Sequence[torch.Tensor | None] | None = None) -> list[FitResult]:
    """Fit several independent pairs in one pass: one network per pair, held side by side.

    Each pair gets the maps :func:`fit_maps` would give it alone (the same start, its own gradient,
    clipping and Adam state), up to rounding. Worth it where one pair leaves the device idle: a GPU.

    Args:
        pairs: ``(A, B)`` pairs as for :func:`fit_maps`, any sizes.
        progress: called as ``progress(steps_done, loss)`` with the steps of every pair counted and the
            mean loss.
        starts: each pair's start, found before (:func:`find_starts`); by default found here.
        hints: per pair, None or its point hints ``(N, 4)`` (see :func:`~diffmorph.loss.hint_errors`): the warp
            carries each hinted point onto its partner, as a soft term of the loss.

    Returns:
        One :class:`FitResult` per pair; ``seconds`` is the time of the whole pass.

    Raises:
        FitDivergedError: a pair's loss became NaN or infinite.
    """
    started = time.perf_counter()
    scales = scales_of(config)
    size = config.size
    count = len(pairs)

    # 1. Inputs at the working resolution. The network input M never changes, so it is resized to the
    #    network's side once here instead of at every step.
    a_work, b_work = _stacked(pairs, size, device)  # (K, 3, S, S) each
    grid = coordinate_grid(size, size, device=device).expand(count, -1, -1, -1)
    net_input = torch.cat((grid, a_work * 0.1, b_work * 0.1), dim=1)  # (K, 8, S, S)
    prepared = MapNet.prepare(net_input, params.net_side(config.refine))  # (K, 8, N, N)
    starts = find_starts(pairs, config, start_params) if starts is None else starts
    if len(starts) != len(pairs):
        raise ValueError(f"{len(starts)} starts given for {len(pairs)} pairs")

    # 2. Networks and optimiser. Weights are drawn on the CPU so a seed means the same start everywhere.
    #    Channels-last is oneDNN's and cuDNN's preferred layout for convolutions (about 15 % faster here).
    net = MapNet(in_channels=net_input.shape[1], members=count, seed=config.seed)
    net = net.to(device, memory_format=torch.channels_last)
    prepared = prepared.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config.precision, device))
    # A start may hold its warp in places (Start.free): there the network's warp maps are left out. It may
    # also count some pixels less in the round trip of the loss (Start.round_trip), such as ground that a
    # subject covers in one image only: no pair of warps sends those pixels there and back.
    free = None  # (K, 16, 84, 84): 1 where the network's map counts, 0 where the start holds it
    if any(start.free is not None for start in starts):
        free = torch.ones(count, MAP_CHANNELS, MAP_SIZE, MAP_SIZE)
        for k, start in enumerate(starts):
            if start.free is not None:
                free[k, WARP_CHANNELS] = start.free.repeat_interleave(2, dim=0)
        free = free.to(device)
    # Where a start was found, the fit starts from exactly its maps: they are added to the network's
    # output, less that output's first value (the random weights' own maps would move the warp off the
    # start by a pixel or two, enough to show edges twice mid-morph).
    priors = None
    if any(start.maps is not None for start in starts):
        priors = torch.stack([torch.zeros(MAP_CHANNELS, MAP_SIZE, MAP_SIZE) if start.maps is None else start.maps
                              for start in starts]).to(device)
        found = torch.tensor([start.maps is not None for start in starts], device=device)
        with torch.no_grad(), autocast:
            first = _output(net, prepared, free)
        priors = priors - first * found.view(-1, 1, 1, 1)
    round_trips = None
    if any(start.round_trip is not None for start in starts):
        round_trips = [None if start.round_trip is None else
                       resize(start.round_trip[None, None].to(device), size, size)[0] for start in starts]
    weights = list(net.parameters())
    optimizer = Adam(weights, eps=params.adam_eps)
    # The state of the lowest loss so far, per pair, to go back to after a spike (on the device: no reads).
    state = weights + optimizer.first + optimizer.second
    best_state = [tensor.detach().clone() for tensor in state]
    best_loss = torch.full((count,), math.inf, device=device)
    rates = torch.ones(count, device=device)

    # 3. Gradient steps. Losses stay on the device and are read back in blocks (params.read_every):
    #    reading every step would stall a GPU. On a CPU reading is free, so progress and NaN checks are per step.
    sync_every = params.read_every or (1 if device.type == "cpu" else 25)
    hinted = None if hints is None or all(h is None for h in hints) else [
        None if h is None else h.to(device) for h in hints]
    losses = torch.empty(config.steps, count, device=device)
    history: list[list[float]] = []
    coarse = config.objective == "coarse-to-fine"
    blurred: dict[float, tuple[torch.Tensor, torch.Tensor]] = {0.0: (a_work, b_work)}  # one blur per level
    for step in range(config.steps):
        sigma, colour_weight = coarse_to_fine(step, config.steps, params) if coarse else (0.0, 0.0)
        if sigma not in blurred:
            blurred[sigma] = (gaussian_blur(a_work, sigma * size), gaussian_blur(b_work, sigma * size))
            best_loss.fill_(math.inf)  # sharper targets raise the loss: that is no spike
        targets = blurred[sigma]
        with autocast:
            raw = _output(net, prepared, free)  # (K, 16, 84, 84)
        if priors is not None:
            raw = raw + priors
        maps = resize(raw, size, size)  # (K, 16, S, S): the warps and the loss stay float32
        loss = morph_loss(net_input, *targets, maps, scales, colour_weight=colour_weight,
                          round_trip_weights=round_trips)  # (K,)
        if hinted is not None:
            loss = loss + params.hint_weight * hint_errors(maps, hinted, scales)
        with torch.no_grad():
            current = loss.detach()
            improved, spiked = current < best_loss, current > params.spike * best_loss
            best_loss = torch.where(improved, current, best_loss)
            # In place, one mask per shape: as new tensors, this bookkeeping cost about 1 ms more a step on a CPU.
            for saved, live, mask in zip(best_state, state, _state_masks(weights, improved), strict=True):
                torch.where(mask, live, saved, out=saved)
        net.zero_grad(set_to_none=True)
        loss.sum().backward()
        with torch.no_grad():  # a pair that spiked goes back, and does not learn from the spike's gradient
            back = _state_masks(weights, spiked)
            for saved, live, mask in zip(best_state, state, back, strict=True):
                torch.where(mask, saved, live, out=live)
            for weight, mask in zip(weights, back, strict=False):  # the weights come first in the state
                weight.grad.masked_fill_(mask, 0.0)
            rates = torch.where(spiked, rates * 0.5, rates)
        if config.grad_clip > 0:
            _clip_each(weights, count, config.grad_clip)
        if config.schedule == "onecycle":
            optimizer.step(*one_cycle(step, config.steps, config.learning_rate), rates)
        else:
            optimizer.step(config.learning_rate, 0.9, rates)
        losses[step] = loss.detach()
        if (step + 1) % sync_every == 0 or step + 1 == config.steps:
            _take(losses[len(history):step + 1], history, count, progress, f"lower --lr (now {config.learning_rate:g})")

    # 4. The maps of the fitted networks, in float32 whatever the training precision. The networks
    #    themselves are discarded.
    with torch.no_grad():
        raw = _output(net, prepared, free)  # (K, 16, 84, 84)
        if priors is not None:
            raw = raw + priors

    # 5. The maps themselves refined, with the images compared at a finer size.
    if config.refine > 0:
        fine = params.refine_side(size)  # the same for every pair of a batch, whatever their sizes: as if alone
        a_fine, b_fine = _stacked(pairs, fine, device)
        advice = "give --refine 0 to keep the network's maps"
        raw = _refine(raw, net_input, a_fine, b_fine, round_trips, free, scales, config.refine, sync_every,
                      lambda block: _take(block, history, count, progress, advice), params, hinted)
    raw = raw.cpu()
    seconds = time.perf_counter() - started
    return [FitResult(maps=raw[k].contiguous(), losses=[values[k] for values in history], seconds=seconds,
                      start=starts[k].record(config.align))
            for k in range(count)]


def _refine(raw: torch.Tensor, net_input: torch.Tensor, a_fine: torch.Tensor, b_fine: torch.Tensor,
            round_trips: list[torch.Tensor | None] | None, free: torch.Tensor | None, scales: MapScales,
            steps: int, sync_every: int, take: Callable[[torch.Tensor], None], params: FitParams,
            hints: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """The fitted maps refined without the network: ``steps`` Adam steps on the maps' own values.

    The network makes smooth maps and, at the end of its steps, still lowers the loss slowly; changing the
    ``(K, 16, 84, 84)`` values themselves (applied upsampled, as always) lowers it much further in a few steps
    (``params.refine_lr``, annealed; the warps at ``params.refine_warp_share`` of that). Here the images are compared
    at ``a_fine``'s size (``params.refine_zoom`` times the working size), so the warps place edges
    and the colour maps match tones more finely than the network's fit could see. The round trip, which is
    about the flows and costs the most, stays at ``net_input``'s size. Where a start holds the warp (``free``),
    it stays held.

    Args:
        raw: ``(K, 16, 84, 84)`` the network's maps, with any start added.
        net_input, round_trips: the fit's, at the working size.
        a_fine, b_fine: ``(K, 3, F, F)`` the images at the finer size.
        sync_every, take: every ``sync_every`` steps (and at the last), ``take`` is given the block of losses
            since, ``(steps, K)``, as the fit's own are.
        hints: per pair, None or its point hints, kept as in the network's steps.

    Returns:
        ``(K, 16, 84, 84)``.
    """
    size, fine = net_input.shape[-1], a_fine.shape[-1]
    share = torch.ones(1, MAP_CHANNELS, 1, 1, device=raw.device)
    share[:, WARP_CHANNELS] = params.refine_warp_share
    share = share if free is None else share * free  # (K or 1, 16, 84 or 1, 84 or 1)
    change = torch.zeros_like(raw, requires_grad=True)
    optimizer = Adam([change], eps=params.adam_eps)
    losses = torch.empty(steps, raw.shape[0], device=raw.device)
    for step in range(steps):
        maps = raw + change * share
        a_to_b, b_to_a = mapping_errors(a_fine, b_fine, resize(maps, fine, fine), scales)
        loss = (round_trip_error(net_input, resize(maps, size, size), scales, round_trips)
                + MAPPING_WEIGHT * a_to_b + MAPPING_WEIGHT * b_to_a)
        if hints is not None:
            loss = loss + params.hint_weight * hint_errors(maps, hints, scales)
        change.grad = None
        loss.sum().backward()
        optimizer.step(params.refine_lr * (math.cos(math.pi * step / steps) + 1.0) / 2.0, 0.9)
        losses[step] = loss.detach()
        if (step + 1) % sync_every == 0 or step + 1 == steps:
            take(losses[(step // sync_every) * sync_every:step + 1])
    return (raw + change * share).detach()


def _stacked(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], side: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair's A and B squashed to ``side`` x ``side`` on ``device``: ``(K, 3, side, side)`` each."""
    return tuple(torch.cat([resize(pair[i].to(device), side, side, antialias=True) for pair in pairs])
                 for i in (0, 1))


def _take(block: torch.Tensor, history: list[list[float]], count: int, progress: ProgressCallback | None,
          advice: str) -> None:
    """Read a block of losses, ``(steps, K)``, into ``history``, failing with ``advice`` where one is not finite;
    report progress."""
    for values in block.tolist():
        if not all(math.isfinite(value) for value in values):
            raise FitDivergedError(f"the fit diverged: loss became {max(values)} at step {len(history) + 1}; {advice}")
        history.append(values)
    if progress is not None:
        progress(len(history) * count, sum(history[-1]) / count)


def _state_masks(weights: list[torch.Tensor], members: torch.Tensor) -> list[torch.Tensor]:
    """``members`` (one bool per member network) shaped for each tensor of the fit's state: the weights, then
    Adam's first and second moments, which have the weights' shapes."""
    return [per_member(weight, members) for weight in weights] * 3


def _output(net: MapNet, prepared: torch.Tensor, free: torch.Tensor | None) -> torch.Tensor:
    """The networks' raw maps in float32, upsampled to ``(K, 16, 84, 84)`` where the network's are smaller, each
    scaled by ``free`` (the same shape: 0 where the start holds a map)."""
    raw = resize(net(prepared).float(), MAP_SIZE, MAP_SIZE)
    return raw if free is None else raw * free


def _clip_each(params: list[torch.Tensor], members: int, max_norm: float) -> None:
    """Clip the gradient norm of each member network to ``max_norm``, as ``clip_grad_norm_`` does for one.

    A member's parameters are contiguous blocks along dimension 0 (see :class:`~diffmorph.model.MapNet`).
    """
    grads = [param.grad.unflatten(0, (members, -1)) for param in params]  # (K, ...) views, any memory layout
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim())))
                                                  for g in grads], dim=1), dim=1)  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp_(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))
