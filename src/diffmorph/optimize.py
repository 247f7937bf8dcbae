"""The fitting loop: gradient descent on one network so its maps turn A into B and B into A."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffmorph.align import Alignment, SubjectMove, starting_maps
from diffmorph.config import MorphConfig
from diffmorph.errors import FitDivergedError
from diffmorph.model import MAP_CHANNELS, MAP_SIZE, WARP_CHANNELS, MapNet
from diffmorph.ops import (
    MAPPING_WEIGHT,
    MapScales,
    coordinate_grid,
    gaussian_blur,
    mapping_errors,
    morph_loss,
    resize,
    round_trip_error,
)

ProgressCallback = Callable[[int, float], None]
"""Called as ``progress(steps_done, current_loss)`` while fitting."""

# The coarse-to-fine objective (see :func:`coarse_to_fine`).
COARSE_BLUR = 0.125  # Gaussian sigma of the first level, as a fraction of the working size.
COARSE_LEVELS = 6  # Blur levels, from COARSE_BLUR down to none.
COARSE_FRACTION = 0.25  # Share of the steps spent before the images are compared unblurred.
COLOUR_HOLD = 1.0  # Weight of the colour-map penalty at the first step; it falls to 0 with the blur.
# A loss this many times the lowest so far is a spike: the network goes back to the state that gave the
# lowest, and that pair's learning rate is halved for the rest of the fit (see fit_batch). Measured at the
# one-cycle peak: one-step blips of up to 6x that recover by themselves (left alone), and a climb to 36x
# that settled at twice the loss other seeds reach (caught).
SPIKE = 10.0
# The refinement (see _refine): Adam's rate on the colour maps' raw values, annealed to 0 along a cosine, and the
# warp maps' share of it (0.005 a step: 1/4000 of the frame at the default warp scale).
REFINE_LR = 0.02
REFINE_WARP_SHARE = 0.25
REFINE_ZOOM = 2  # the refinement compares the images at this many times the working size


@dataclass(frozen=True)
class FitResult:
    """What a fit produces.

    Attributes:
        maps: ``(16, 84, 84)`` float32 raw maps on the CPU (A->B channels 0-7, B->A 8-15); resize
            them bilinearly to any resolution to apply them.
        losses: the loss at every step, before that step's update: the network's steps, then the
            refinement's (see :func:`_refine`; against sharper images, so its first is higher).
        seconds: wall time of the fit.
        alignment: the move of the whole picture the warp started from (see :mod:`diffmorph.align`), or None.
        bent: whether the warp started from that move (or none) bent region by region.
        subject: the move of the pair's one subject that the warp carries it by (and holds), or None.
    """

    maps: torch.Tensor
    losses: list[float]
    seconds: float
    alignment: Alignment | None = None
    bent: bool = False
    subject: SubjectMove | None = None


def scales_of(config: MorphConfig) -> MapScales:
    return MapScales(warp=config.warp_scale, mult=config.mult_scale, add=config.add_scale,
                     add_first=config.add_first)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bfloat16 autocast for the network on ``device``."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


@functools.cache
def _cpu_has_native_bf16() -> bool:
    # oneDNN also "supports" bf16 on CPUs that only emulate it, where it is slower than float32, so
    # look for the instructions themselves (Linux; elsewhere auto stays float32).
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def coarse_to_fine(step: int, total: int) -> tuple[float, float]:
    """Blur and colour-map penalty at ``step`` of a coarse-to-fine fit of ``total`` steps.

    The gradient of an image difference with respect to a warp only sees about a pixel around each
    sample, so a plain fit cannot find content that moved further: it recolours instead, and the
    morph shows the content fading out in one place and in at the other. Blurring both images
    widens that reach to the blur's size, and holding the colour maps back leaves the warp as the
    only way to lower the error. Over the first :data:`COARSE_FRACTION` of the steps the blur steps
    down through :data:`COARSE_LEVELS` levels (quadratically, so the fine levels get more steps of
    their own sigma) and the penalty falls linearly; after that the fit is the classic one, with
    the warp already in place, so colour maps fix what the warp cannot. It does not always find the
    move: a fit is a descent from a random start, and on some pairs the classic one aligns better.

    Returns:
        ``(sigma, colour_weight)``: the blur as a fraction of the working size, and the weight of
        the colour-map penalty (see :func:`~diffmorph.ops.morph_loss`).

    >>> [tuple(round(v, 4) for v in coarse_to_fine(k, 100)) for k in (0, 12, 24, 25, 99)]
    [(0.125, 1.0), (0.0556, 0.52), (0.0035, 0.04), (0.0, 0.0), (0.0, 0.0)]
    """
    progress = min(1.0, step / max(1.0, COARSE_FRACTION * total))
    level = min(COARSE_LEVELS, int(progress * COARSE_LEVELS))
    return COARSE_BLUR * (1.0 - level / COARSE_LEVELS) ** 2, COLOUR_HOLD * (1.0 - progress)


@dataclass
class _Adam:
    """Adam (Kingma and Ba), as ``torch.optim.Adam`` computes it, with a learning rate and beta1 per step.

    Written out because constructing ``torch.optim.Adam`` imports TorchDynamo, about a second of
    start-up on a laptop CPU, against a fit of a few seconds.
    """

    params: list[torch.Tensor]
    eps: float = 1e-7  # Keras' default, as in the original
    beta2: float = 0.999

    def __post_init__(self) -> None:
        self.step_count = 0
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr: float, beta1: float, rates: torch.Tensor | None = None) -> None:
        """One update; ``rates``, one factor per member network (see :class:`~diffmorph.model.MapNet`),
        scales each member's step."""
        self.step_count += 1
        first_correction = 1.0 - beta1**self.step_count
        second_correction_sqrt = math.sqrt(1.0 - self.beta2**self.step_count)
        for param, first, second in zip(self.params, self.first, self.second, strict=True):
            grad = param.grad
            first.lerp_(grad, 1.0 - beta1)
            second.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
            denominator = (second.sqrt() / second_correction_sqrt).add_(self.eps)
            moment = first if rates is None else _per_member(first, rates) * first
            param.addcdiv_(moment, denominator, value=-lr / first_correction)


def fit_maps(a: torch.Tensor, b: torch.Tensor, config: MorphConfig, device: torch.device, *,
             progress: ProgressCallback | None = None) -> FitResult:
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
    return fit_batch([(a, b)], config, device, progress=progress)[0]


def fit_batch(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], config: MorphConfig, device: torch.device, *,
              progress: ProgressCallback | None = None) -> list[FitResult]:
    """Fit several independent pairs in one pass: one network per pair, held side by side.

    Each pair gets the maps :func:`fit_maps` would give it alone (the same start, its own gradient,
    clipping and Adam state), up to rounding. Worth it where one pair leaves the device idle: a GPU.

    Args:
        pairs: ``(A, B)`` pairs as for :func:`fit_maps`, any sizes.
        progress: called as ``progress(steps_done, loss)`` with the steps of every pair counted and the
            mean loss.

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
    #    network's 96 x 96 once here instead of at every step.
    a_work, b_work = _stacked(pairs, size, device)  # (K, 3, S, S) each
    grid = coordinate_grid(size, size, device=device).expand(count, -1, -1, -1)
    net_input = torch.cat((grid, a_work * 0.1, b_work * 0.1), dim=1)  # (K, 8, S, S)
    prepared = MapNet.prepare(net_input)  # (K, 8, 96, 96)
    # Where each warp starts, found on the CPU (small FFTs, a small fit) so every device finds the same.
    starts = [starting_maps(a.cpu().float(), b.cpu().float(), config.align, config.warp_scale, MAP_SIZE)
              for a, b in pairs]

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
    params = list(net.parameters())
    optimizer = _Adam(params)
    # The state of the lowest loss so far, per pair, to go back to after a spike (on the device: no reads).
    state = params + optimizer.first + optimizer.second
    best_state = [tensor.detach().clone() for tensor in state]
    best_loss = torch.full((count,), math.inf, device=device)
    rates = torch.ones(count, device=device)

    # 3. Gradient steps. Losses stay on the device and are read back in blocks: reading every step
    #    would stall a GPU. On a CPU reading is free, so progress and NaN checks are per step.
    sync_every = 1 if device.type == "cpu" else 25
    losses = torch.empty(config.steps, count, device=device)
    history: list[list[float]] = []
    coarse = config.objective == "coarse-to-fine"
    blurred: dict[float, tuple[torch.Tensor, torch.Tensor]] = {0.0: (a_work, b_work)}  # one blur per level
    for step in range(config.steps):
        sigma, colour_weight = coarse_to_fine(step, config.steps) if coarse else (0.0, 0.0)
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
        with torch.no_grad():
            current = loss.detach()
            improved, spiked = current < best_loss, current > SPIKE * best_loss
            best_loss = torch.where(improved, current, best_loss)
            for saved, live in zip(best_state, state, strict=True):
                saved.copy_(torch.where(_per_member(live, improved), live, saved))
        net.zero_grad(set_to_none=True)
        loss.sum().backward()
        with torch.no_grad():  # a pair that spiked goes back, and does not learn from the spike's gradient
            for saved, live in zip(best_state, state, strict=True):
                live.copy_(torch.where(_per_member(live, spiked), saved, live))
            for param in params:
                param.grad.mul_(_per_member(param, ~spiked))
            rates = torch.where(spiked, rates * 0.5, rates)
        if config.grad_clip > 0:
            _clip_each(params, count, config.grad_clip)
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
        fine = REFINE_ZOOM * size  # the same for every pair of a batch, whatever their sizes: as if alone
        a_fine, b_fine = _stacked(pairs, fine, device)
        advice = "give --refine 0 to keep the network's maps"
        raw = _refine(raw, net_input, a_fine, b_fine, round_trips, free, scales, config.refine, sync_every,
                      lambda block: _take(block, history, count, progress, advice))
    raw = raw.cpu()
    seconds = time.perf_counter() - started
    return [FitResult(maps=raw[k].contiguous(), losses=[values[k] for values in history], seconds=seconds,
                      alignment=starts[k].move, bent=starts[k].bent, subject=starts[k].subject)
            for k in range(count)]


def _refine(raw: torch.Tensor, net_input: torch.Tensor, a_fine: torch.Tensor, b_fine: torch.Tensor,
            round_trips: list[torch.Tensor | None] | None, free: torch.Tensor | None, scales: MapScales,
            steps: int, sync_every: int, take: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """The fitted maps refined without the network: ``steps`` Adam steps on the maps' own values.

    The network makes smooth maps and, at the end of its steps, still lowers the loss slowly; changing the
    ``(K, 16, 84, 84)`` values themselves (applied upsampled, as always) lowers it much further in a few steps
    (:data:`REFINE_LR`, annealed; the warps at :data:`REFINE_WARP_SHARE` of that). Here the images are compared
    at ``a_fine``'s size (:data:`REFINE_ZOOM` times the working size), so the warps place edges
    and the colour maps match tones more finely than the network's fit could see. The round trip, which is
    about the flows and costs the most, stays at ``net_input``'s size. Where a start holds the warp (``free``),
    it stays held.

    Args:
        raw: ``(K, 16, 84, 84)`` the network's maps, with any start added.
        net_input, round_trips: the fit's, at the working size.
        a_fine, b_fine: ``(K, 3, F, F)`` the images at the finer size.
        sync_every, take: every ``sync_every`` steps (and at the last), ``take`` is given the block of losses
            since, ``(steps, K)``, as the fit's own are.

    Returns:
        ``(K, 16, 84, 84)``.
    """
    size, fine = net_input.shape[-1], a_fine.shape[-1]
    share = torch.ones(1, MAP_CHANNELS, 1, 1, device=raw.device)
    share[:, WARP_CHANNELS] = REFINE_WARP_SHARE
    share = share if free is None else share * free  # (K or 1, 16, 84 or 1, 84 or 1)
    change = torch.zeros_like(raw, requires_grad=True)
    optimizer = _Adam([change])
    losses = torch.empty(steps, raw.shape[0], device=raw.device)
    for step in range(steps):
        maps = raw + change * share
        a_to_b, b_to_a = mapping_errors(a_fine, b_fine, resize(maps, fine, fine), scales)
        loss = (round_trip_error(net_input, resize(maps, size, size), scales, round_trips)
                + MAPPING_WEIGHT * a_to_b + MAPPING_WEIGHT * b_to_a)
        change.grad = None
        loss.sum().backward()
        optimizer.step(REFINE_LR * (math.cos(math.pi * step / steps) + 1.0) / 2.0, 0.9)
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


def _output(net: MapNet, prepared: torch.Tensor, free: torch.Tensor | None) -> torch.Tensor:
    """The networks' raw maps in float32, ``(K, 16, 84, 84)``, each scaled by ``free`` (the same shape: 0 where
    the start holds a map)."""
    raw = net(prepared).float()
    return raw if free is None else raw * free


def _per_member(tensor: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values``, one per member network, shaped to broadcast over ``tensor``'s members.

    A member's parameters are contiguous blocks along dimension 0 (see :class:`~diffmorph.model.MapNet`).
    """
    members = values.shape[0]
    block = tensor.shape[0] // members
    return values.repeat_interleave(block).view(-1, *[1] * (tensor.dim() - 1))


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
