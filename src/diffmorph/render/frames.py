"""From fitted maps to frames at the images' own resolution: the classic and the sharp frames.

Tensor shapes follow :mod:`diffmorph.ops`. Timing (which strength each frame shows) lives in
:mod:`diffmorph.render.pacing`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from diffmorph.config import MODES
from diffmorph.ops import (
    MapScales,
    fill_holes,
    flow_from_warp_map,
    gaussian_blur,
    length,
    psnr,
    recolour,
    resize,
    sample,
    sampling_grid,
    splat,
)
from diffmorph.render.filling import fill_untrusted
from diffmorph.render.pacing import PaceParams, Schedule, even_schedule
from diffmorph.render.sampling import RemapSampler, upsample
from diffmorph.threads import Mapper


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[-1, 1]`` to an ``(H, W, 3)`` uint8 array, rounding to the nearest level.

    >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)).tolist()
    [[[0, 128, 255]]]
    """
    pixels = image[0].permute(1, 2, 0)  # (H, W, 3)
    if pixels.device.type == "cpu" and pixels.dtype == torch.float32 and pixels.is_contiguous():
        # The frames' own layout: OpenCV scales, rounds and saturates in one pass, several times faster than
        # torch's four (ties may round the other way: a level at most, at a handful of pixels a frame)
        planes = pixels.detach().numpy()
        return cv2.addWeighted(planes, 127.5, planes, 0.0, 127.5, dtype=cv2.CV_8U).reshape(planes.shape)
    levels = pixels.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return levels.contiguous().cpu().numpy()


PACINGS = ("even", "linear")  # the config's "auto" is resolved before a renderer is made


@dataclass(frozen=True)
class FrameParams:
    """How "sharp" frames are made (evidence in docs/method.md)."""

    detail_band: int = 96  # longest side in pixels of the colour band; finer structure is detail
    max_detail_gain: float = 2.0**0.5  # at most the contrast a half-and-half blend of unrelated detail loses
    # On a CPU the detail band is sampled by OpenCV (one bicubic pass, about twice as fast as torch's); False:
    # by torch, as on other devices (the same sampling, for comparing the two).
    opencv: bool = True
    energy_side: int = 256  # the detail band's energy is measured on a lattice of about this many pixels a side
    splat_size: int = 192  # longest side at which content is carried forward; the maps themselves are 84 x 84
    # Where carried pixels land on each other, those that move further cover the rest, as nearer things do in a
    # camera move: their weight grows by e for each 1 % of the frame further, up to half the frame.
    cover: float = 100.0
    splat_blur: float = 1.0  # Gaussian sigma, in pixels of splat_size, smoothing the carried flow between pixels
    hole: float = 1e-3  # pixels that less than this share of a carried pixel lands on are holes, filled from around
    # A carried pixel shows what it fetches only where the other direction's warp moves that content there too,
    # within stray pixels (of splat_size) plus stray_share of its own way; it fades into a filling from around
    # by twice that. The two warps agree only roughly, so this catches gross mismatches only (a subject that left).
    stray: float = 8.0
    stray_share: float = 1.0


@dataclass(frozen=True)
class _Carrier:
    """Where "sharp" frames sample each image: its content carried forward along straight lines.

    Scaling a backward warp by the strength, as the classic frames do, only moves content by that share
    where the warp is about the same over the distance it moves: content that moved further than its own
    size is left in place and fades out there (the warp is non-zero only where the content ends), and two
    layers moved by a turn or a zoom drift apart mid-morph. Here each pixel ``q`` of the warp's target,
    which shows A at ``q - flow(q)``, is carried from there to ``q`` in a straight line: at strength ``s``
    it is at ``q - (1 - s) flow(q)`` and fetches A from ``s flow(q)`` behind it. At strength 1 that is the
    fitted warp itself. Where pixels meet, those that move further cover the rest.

    Attributes:
        flows: ``(2, 2, h, w)`` the A->B and B->A warps' backward flows, in pixels of this size.
        importance: ``(2, 1, h, w)``: ``params.cover`` times each flow's length as a share of the frame.
        motion: ``(2, 2, h, w)`` where each image's own pixels go: minus the other direction's flow
            (the B->A warp says where in B each pixel of A is shown).
        params: the tolerances of :meth:`grids`.
    """

    flows: torch.Tensor
    importance: torch.Tensor
    motion: torch.Tensor
    params: FrameParams

    @classmethod
    def build(cls, maps: torch.Tensor, scales: MapScales, height: int, width: int, params: FrameParams) -> _Carrier:
        """From ``(2, 8, h, w)`` raw maps (A->B, B->A), for images of ``height`` x ``width``."""
        scale = min(1.0, params.splat_size / max(height, width))
        size = (max(2, round(height * scale)), max(2, round(width * scale)))
        flows = flow_from_warp_map(resize(maps[:, 6:8], *size), scales.warp)  # (2, 2, h, w)
        importance = params.cover * (length(flows) / max(size)).clamp_(max=0.5)
        return cls(flows, importance, -flows.flip(0), params)

    def grids(self, strengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each image carried by its strength (``(2,)``) samples, and where that holds.

        Where nothing lands (the frame's edge that content leaves, a stretch), the flow is filled in from
        around. What a pixel then fetches may be content that the other direction's warp moves elsewhere:
        ground that a subject uncovered, which this image does not show, or content that the warp also
        took to a second place. Such pixels are not trusted; :meth:`_Stack.warped` fills them in from the
        trusted pixels around, so a subject that moves away does not also stay. Trust falls from 1 to 0
        as the mismatch grows from one to two tolerances, so that pixels fade into their filling as ``t``
        goes rather than switch (a switch is a jump between two frames).

        Returns:
            ``(grids, trust)``: ``(2, h, w, 2)`` sampling grids and ``(2, 1, h, w)`` in ``[0, 1]``.
        """
        share = strengths.view(2, 1, 1, 1)
        flow, coverage = splat(share * self.flows, (share - 1.0) * self.flows, self.importance)
        flow = gaussian_blur(fill_holes(flow, coverage > self.params.hole), self.params.splat_blur)  # (2, 2, h, w)
        grids = sampling_grid(flow)
        # The fetched content's own way at this strength, less the way this pixel fetched it from.
        stray = length(sample(share * self.motion, grids) - flow)
        tolerance = self.params.stray + self.params.stray_share * length(flow)
        return grids, (2.0 - stray / tolerance).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class _Stack:
    """Both directions' maps at one resolution, batched (A->B first) so one call serves both."""

    images: torch.Tensor  # (2, 3, H, W) A and B, the images each direction moves
    maps: torch.Tensor  # (2, 8, h, w) raw maps, any resolution
    identity: torch.Tensor  # (1, H, W, 2) sampling grid of no warp
    grids: torch.Tensor  # (2, H, W, 2) sampling grids of the full warps
    colour: torch.Tensor | None  # (2, 6, H, W) raw mult and add maps at the images' size, when frames need them
    # For "sharp" frames, the images the carried grids fetch detail from, bicubically (any size: the small
    # frames that measure the pace fetch from the full-size images), and OpenCV's sampler of them on a CPU.
    sources: torch.Tensor | None = None
    sampler: RemapSampler | None = None

    @classmethod
    def build(cls, images: torch.Tensor, maps: torch.Tensor, scales: MapScales, *, sharp: bool, colour: bool,
              opencv: bool = True) -> _Stack:
        """``sharp``: the detail band is fetched from the images bicubically, by OpenCV where ``opencv`` and the
        images are on a CPU; otherwise every warp samples bilinearly, as the original did."""
        height, width = images.shape[-2:]
        identity = sampling_grid(torch.zeros(1, 2, height, width, device=images.device))  # (1, H, W, 2)
        grids = sampling_grid(flow_from_warp_map(resize(maps[:, 6:8], height, width), scales.warp))  # (2, H, W, 2)
        sampler = None
        if sharp and opencv and images.device.type == "cpu" and images.dtype == torch.float32:
            sampler = RemapSampler(images)
        return cls(images=images, maps=maps, identity=identity, grids=grids,
                   colour=resize(maps[:, 0:6], height, width) if colour else None,
                   sources=images if sharp else None, sampler=sampler)

    def warped(self, strengths: torch.Tensor, images: torch.Tensor | None = None, *,
               carried: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``images`` (the sources by default) warped by each direction's flow times its strength.

        Args:
            strengths: ``(2,)``, one per direction.
            carried: :meth:`_Carrier.grids` at these strengths, any size: sample there instead, and fill
                in the pixels that are not trusted.
        """
        detail = images is None  # the sharp frames' detail band: fetched bicubically from the sources
        images = self.sources if detail else images
        if carried is None:
            return sample(images, torch.lerp(self.identity, self.grids, strengths.view(2, 1, 1, 1)))
        grids, trust = carried
        height, width = self.identity.shape[1:3]
        still = strengths.view(2, 1, 1, 1) == 0
        trust = torch.where(still, 1.0, trust)
        if bool((trust >= 1.0).all()):  # decided small: then the full-size trust is not needed
            trust = None
        if detail and self.sampler is not None:
            layers = self.sampler(grids, (height, width), still.view(-1).tolist())
        else:
            if grids.shape[1:3] != (height, width):  # align_corners: the identity grid stays exactly itself
                # Upsampled as two planes and sampled from as a strided view, with the same values: torch's CPU
                # kernel upsamples the interleaved (x, y) grid several times slower, and interleaving the planes
                # again would cost a copy that the sampling does not need.
                grids = F.interpolate(grids.permute(0, 3, 1, 2).contiguous(), size=(height, width), mode="bilinear",
                                      align_corners=True).permute(0, 2, 3, 1)
            if bool(still.any()):  # at strength 0 exactly the image, whatever the rounding of the resize
                grids = torch.where(still, self.identity, grids)
            layers = sample(images, grids, mode="bicubic" if detail else "bilinear")
            del grids  # a full-size grid: freed before the filling allocates its own buffers
            if bool(still.any()) and images.shape[-2:] == (height, width):  # bicubic weights round off the pixel
                layers = torch.where(still, images, layers)
        if trust is None:
            return layers
        if trust.shape[-1] < width:  # layers finer than the trust: filled at its size
            return fill_untrusted(layers, trust)
        if trust.shape[-2:] != (height, width):
            trust = F.interpolate(trust, size=(height, width), mode="bilinear", align_corners=True)
        return torch.lerp(fill_holes(layers, trust >= 1.0), layers, trust)

    def moved(self, strengths: torch.Tensor, scales: MapScales) -> torch.Tensor:
        """Each image recoloured and warped by its maps at its strength, clipped: ``(2, 3, H, W)``."""
        colour = self.colour
        if colour is None:
            colour = resize(self.maps[:, 0:6], *self.images.shape[-2:])
        coloured = recolour(self.images, colour[:, 0:3], colour[:, 3:6], scales, strengths)
        return self.warped(strengths, coloured).clamp_(-1.0, 1.0)


class Renderer:
    """Applies a pair's maps at the images' resolution.

    The raw maps are smooth fields, so they are upsampled (bilinear) to the images' size once, and
    each direction's sampling grid is built once: the grid at strength ``s`` is
    ``lerp(identity, full grid, s)``. Both directions go through each operation as one batch of 2.

    Two ways to make a frame (``mode``):

    - ``"classic"``, the original method: each image recoloured and warped by its maps scaled by
      ``t``, then blended. Colour changes come through smooth maps, so fine structure fades out
      towards the middle of the morph.
    - ``"sharp"`` splits the frame in two bands. The colour band is the classic frame rendered at
      ``params.detail_band`` pixels and upsampled; the detail band (everything finer) is the blend of
      the two images warped at full resolution, sampled bicubically (see :mod:`diffmorph.render.sampling`)
      so that sub-pixel warps do not blur them. Blending two unaligned details halves their contrast, so
      the detail band's energy is restored to the interpolation of A's and B's (gain at most
      ``params.max_detail_gain``). Both bands carry content along straight lines from where each warp
      fetches it to where it puts it (see :class:`_Carrier`), rather than scaling the warps. Both equal
      A at ``t = 0`` and B at ``t = 1``.

    The strength shown at time ``t`` is ``t`` (``pacing="linear"``) or an even
    :class:`~diffmorph.render.pacing.Schedule` measured once, on small frames, at the first frame asked for.

    Args:
        maps: ``(16, h, w)`` raw maps from a fit (any resolution).
        a, b: ``(1, 3, H, W)`` images in ``[-1, 1]``, B already fitted to A's frame.
        scales: the map strengths the maps were fitted with.
        device: where to render.
        mode: ``"sharp"`` or ``"classic"``.
        pacing: ``"even"`` or ``"linear"`` (frame ``t`` is the maps' strength).
        frames: for even pacing, the frames from A to B the morph is shown in, at times
            :func:`~diffmorph.render.pacing.frame_times` (``None``: not known).
        params, pace: the tuned numbers of the sharp frames and of even pacing.
    """

    def __init__(self, maps: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scales: MapScales,
                 device: torch.device, *, mode: str = "sharp", pacing: str = "even", frames: int | None = None,
                 params: FrameParams = FrameParams(), pace: PaceParams = PaceParams()):
        if a.shape != b.shape or a.dim() != 4 or a.shape[:2] != (1, 3):
            raise ValueError(f"a and b must both be (1, 3, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
        if mode not in MODES or pacing not in PACINGS:
            raise ValueError(f"mode must be one of {MODES} and pacing one of {PACINGS}, got {mode!r}, {pacing!r}")
        if frames is not None and frames < 2:
            raise ValueError(f"a morph needs at least 2 frames, got {frames}")
        height, width = a.shape[-2:]
        self.scales = scales
        self.mode = mode
        self.pacing = pacing
        self.frames = frames
        self.params = params
        self.pace = pace
        images = torch.cat((a.to(device), b.to(device)))  # (2, 3, H, W)
        self.a, self.b = images[0:1], images[1:2]  # views: one copy of the images at full size
        self._maps = maps
        self._schedule: Schedule | None = None
        self._mapped: torch.Tensor | None = None
        stacked_maps = maps.view(2, 8, *maps.shape[-2:]).to(device)  # (2, 8, h, w): A->B, B->A
        sharp = mode == "sharp"
        self._full = _Stack.build(images, stacked_maps, scales, sharp=sharp, colour=not sharp, opencv=params.opencv)
        if sharp:
            longest = max(height, width)
            band = (max(2, round(height * params.detail_band / longest)),
                    max(2, round(width * params.detail_band / longest)))
            small = resize(images, *band, antialias=True)  # (2, 3, h, w)
            self._low = _Stack.build(small, stacked_maps, scales, sharp=False, colour=True)
            self._carrier = _Carrier.build(stacked_maps, scales, height, width, params)
            # A's and B's own detail bands' energy, measured as the frames' is, so that it is the same at the ends
            self._detail_energy = [self._energy(images[k:k + 1], small[k:k + 1]) for k in range(2)]

    def _strengths(self, t: float) -> torch.Tensor:
        return torch.tensor([t, 1.0 - t], dtype=self.a.dtype, device=self.a.device)  # t may be a NumPy float64

    def _classic(self, stack: _Stack, t: float) -> torch.Tensor:
        moved = stack.moved(self._strengths(t), self.scales)  # (2, 3, H, W)
        return torch.lerp(moved[0:1], moved[1:2], t)

    def _sharp(self, t: float) -> torch.Tensor:
        height, width = self.a.shape[-2:]
        strengths = self._strengths(t)
        carried = self._carrier.grids(strengths)  # both bands sample the same carried grid
        warped = self._full.warped(strengths, carried=carried)  # (2, 3, H, W)
        detail = torch.lerp(warped[0:1], warped[1:2], t)
        del warped  # both full-size layers, no longer needed: the peak memory is a frame's
        # The detail band's own coarse part, estimated as the colour band is: from the small images. Both are
        # warped in one pass, as six channels: the images (the coarse part) and the images recoloured.
        low = self._low
        recoloured = recolour(low.images, low.colour[:, 0:3], low.colour[:, 3:6], self.scales, strengths)
        both = low.warped(strengths, torch.cat((low.images, recoloured), dim=1), carried=carried)  # (2, 6, h, w)
        coarse = torch.lerp(both[0:1, 0:3], both[1:2, 0:3], t)
        moved = both[:, 3:6].clamp_(-1.0, 1.0)
        wanted = (1.0 - t) * self._detail_energy[0] + t * self._detail_energy[1]
        present = self._energy(detail, coarse)
        gain = max(1.0, min(self.params.max_detail_gain, (wanted / present) ** 0.5)) if present > 0 else 1.0
        # colour band + gain * (detail - its coarse part); upsampling is linear, so once is enough.
        colour = torch.lerp(moved[0:1], moved[1:2], t).sub_(coarse, alpha=gain)
        colour = upsample(colour, height, width) if self._full.sampler is not None else resize(colour, height, width)
        return colour.add_(detail, alpha=gain).clamp_(-1.0, 1.0)

    def _energy(self, detail: torch.Tensor, coarse: torch.Tensor) -> float:
        """The mean square of the detail band, ``detail`` less ``coarse`` upsampled, on a lattice of the frame's
        pixels (:attr:`FrameParams.energy_side`): an estimate of a mean over a million pixels needs far fewer."""
        height, width = detail.shape[-2:]
        step = max(1, max(height, width) // self.params.energy_side)
        lattice = detail[:, :, ::step, ::step]
        # The coarse band where resize() would put it at those pixels: half-pixel centres, the border repeated.
        y = (torch.arange(0, height, step, device=detail.device, dtype=detail.dtype) + 0.5) * (2.0 / height) - 1.0
        x = (torch.arange(0, width, step, device=detail.device, dtype=detail.dtype) + 0.5) * (2.0 / width) - 1.0
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)[None]  # (1, h', w', 2) as x, y
        below = F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return float((lattice - below).square_().mean())

    @torch.no_grad()
    def frame(self, t: float) -> torch.Tensor:
        """The frame at time ``t`` in ``[0, 1]``: ``(1, 3, H, W)`` in ``[-1, 1]``; A at 0, B at 1.

        In classic mode with linear pacing this equals :func:`diffmorph.ops.blend_frame` on the
        full-resolution maps, in fewer passes.
        """
        return self.at(self.paced(t))

    @torch.no_grad()
    def at(self, strength: float) -> torch.Tensor:
        """The frame at the maps' ``strength`` in ``[0, 1]``, whatever the pacing: ``(1, 3, H, W)``."""
        if self.mode == "classic":
            return self._classic(self._full, strength)
        return self._sharp(strength)

    @torch.no_grad()
    def layers(self, t: float) -> torch.Tensor:
        """A and B, each moved by its maps at strength ``t`` as the frames move them, not recoloured nor
        blended: ``(2, 3, H, W)``. Where the two coincide, a frame at ``t`` shows what they share once.
        """
        strengths = self._strengths(t)
        carried = self._carrier.grids(strengths) if self.mode == "sharp" else None
        return self._full.warped(strengths, self._full.images, carried=carried)

    def paced(self, t: float) -> float:
        """The maps' strength shown at time ``t``: ``t`` itself, or re-timed for even pacing."""
        if self.pacing == "linear" or t <= 0.0 or t >= 1.0:
            return t
        self.measure_pace()
        return self._schedule(t)

    def measure_pace(self, mapper: Mapper = map) -> None:
        """Measure the even pacing's schedule now, rendering its small frames with ``mapper`` (see
        :func:`~diffmorph.threads.frame_map`), where the pacing is even and it is not measured yet."""
        if self.pacing == "even" and self._schedule is None:
            self._schedule = even_schedule(self._small().at, self.frames, self.pace, mapper)

    def _small(self) -> Renderer:
        """A renderer of frames at most ``pace.size`` on a side, for measuring the pace.

        The "sharp" small frames are a lattice of the full-size frame's pixels: they sample the full-size
        images (and share this renderer's carried grids and detail energy), so the change of detail finer
        than the small frames counts.
        """
        height, width = self.a.shape[-2:]
        scale = min(1.0, self.pace.size / max(height, width))
        size = (max(2, round(height * scale)), max(2, round(width * scale)))
        a, b = (resize(x, *size, antialias=True) for x in (self.a, self.b))
        small = Renderer(self._maps, a, b, self.scales, self.a.device, mode=self.mode, pacing="linear",
                         params=self.params, pace=self.pace)
        if self.mode == "sharp":  # sample the full-size images where the full-size frames do
            small._full = replace(small._full, sources=self._full.sources, sampler=self._full.sampler)
            small._carrier = self._carrier
            small._detail_energy = self._detail_energy
        return small

    @torch.no_grad()
    def fully_mapped(self) -> torch.Tensor:
        """A with the A->B maps fully applied and B with the B->A maps, clipped: ``(2, 3, H, W)``; how well
        the maps reproduce the other image."""
        if self._mapped is None:
            self._mapped = self._full.moved(torch.ones(2, device=self.a.device), self.scales)  # (2, 3, H, W)
        return self._mapped


def fidelity(renderer: Renderer) -> dict[str, float]:
    """How well a segment's maps reproduce each image: PSNR in dB of A fully mapped to B against B
    (``a_to_b_psnr``), and of B mapped to A against A (``b_to_a_psnr``)."""
    mapped = renderer.fully_mapped()  # (2, 3, H, W)
    return {"a_to_b_psnr": psnr(mapped[0:1], renderer.b), "b_to_a_psnr": psnr(mapped[1:2], renderer.a)}
