"""The one configuration object: every setting of a morph, with its default.

CLI flags map 1:1 to these fields (``--warp-scale`` is ``warp_scale``). The config is written next to
every output as ``config.json`` and stored inside the maps file, so a morph can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from diffmorph.errors import ConfigError

MODES = ("sharp", "classic")
PACINGS = ("auto", "even", "linear")
OBJECTIVES = ("classic", "coarse-to-fine")
ALIGNS = ("auto", "global", "local", "subject", "none")
FITS = ("crop", "pad", "stretch")
SCHEDULES = ("onecycle", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
EASES = ("linear", "in", "out", "in-out")
# Settings that `diffmorph render` can change without fitting again.
RENDER_SETTINGS = ("mode", "pacing", "frames", "durations", "fps", "ease", "hold", "width", "gif_width",
                   "gif_palette")
GIF_PALETTES = ("clip", "frame")
# Fields that take one of a few names, in the order validate() checks them; the CLI offers the same.
CHOICES = {"mode": MODES, "pacing": PACINGS, "objective": OBJECTIVES, "align": ALIGNS, "fit": FITS,
           "schedule": SCHEDULES, "ease": EASES, "gif_palette": GIF_PALETTES, "precision": PRECISIONS}
# Values that files written before a field existed were made with (where the default has changed).
FORMER = {"align": "none", "refine": 0}
DEFAULT_LR = {"onecycle": 6e-3, "constant": 2e-4}


@dataclass(frozen=True)
class MorphConfig:
    """Settings of one morph. The fit follows the original method, on a faster schedule (see below).

    Create with keyword arguments; call :meth:`validate` (done by :func:`diffmorph.morph`) to get a
    one-line :class:`~diffmorph.errors.ConfigError` for out-of-range values.
    """

    # How frames are made from the fitted maps (the fit is the same for both, so `diffmorph render`
    # can switch). "classic" is the original: images recoloured and warped by the maps scaled by t,
    # then blended; fine structure fades out towards the middle. "sharp" renders the colour change
    # on a coarse band only and carries fine detail from both warped images, at full contrast.
    mode: str = "sharp"
    # Timing of the maps along the morph: "even" re-times frames so the picture changes by about the
    # same amount at every step, "linear" scales the maps by t as the original did; "auto" is even
    # for "sharp" and linear for "classic".
    pacing: str = "auto"
    # What the fit minimises. "classic" is the original's loss on the images as they are, from the
    # first step. "coarse-to-fine" compares blurred images during the first quarter of the steps (the
    # blur shrinks to none) and holds the colour maps back meanwhile, so that the warp rather than a
    # change of colour may carry content that moved further than a few pixels. It is a second
    # opinion, not a better default: on some pairs it removes double images that the classic fit
    # leaves, on others it does worse (measured in the README); try it when a morph shows content twice.
    objective: str = "classic"
    # Where the warp starts. "global" looks for a move of the whole picture (a shift, a zoom and a
    # turn, see diffmorph.align) and, where B clearly shows A's content so moved, starts the fit from
    # it, so content that moved far is carried rather than faded out and in; unrelated images start
    # from no warp. "local" starts from that move (or none) and bends it region by region to match A's
    # structure to B's (diffmorph.align.local_warp): for a subject that changes shape, such as two
    # faces, where no one move fits; where a subject moved far across a ground that changed it can tear
    # the subject mid-morph, and between unrelated pictures it crumples shapes. "auto" takes the
    # move where it explains the pair, else the bent start where bending makes the two pictures'
    # structure agree well enough (a subject in another pose, often two faces; some unrelated pictures too,
    # which then bend into each other rather than crossfade), else the subject's move where there is one,
    # else the move. "subject" looks for one compact subject that stands out of a plain ground in both
    # images alike (diffmorph.align.find_subject_move: a ball, the sun and the moon) and carries it from its
    # place in A to its place in B, scaled, while the ground crossfades; the fit holds the subject's warp and
    # refines the rest. Where there is no such subject it starts as "global". On a CPU, trying to
    # bend adds about 0.6 s per pair, bending about 2 s, the subject's search about 0.1 s. "none" always
    # starts from no warp, as the original did.
    align: str = "auto"
    # Working resolution of the fit (square, like the original). The network always sees a 96 x 96
    # resize of its input, so maps fitted small transfer to any output size; the original used 1024.
    size: int = 128
    # Gradient steps of the fit.
    steps: int = 250
    # Steps of a last stage that refines the fitted maps themselves, without the network, with the images
    # compared at twice the working size (see diffmorph.optimize): each map reproduces the other image more
    # closely (two faces: 20.8 / 20.3 -> 25.7 / 25.8 dB) in 2-3 s more on a 2-core CPU. The frames barely
    # change: their fine detail comes from the warped images. 0 keeps the network's maps, as the original did.
    refine: int = 100
    # Learning-rate schedule: "onecycle" warms up to `lr` and anneals to nearly zero, which converges
    # in far fewer steps; "constant" keeps `lr` throughout, as the original did.
    schedule: str = "onecycle"
    # Adam learning rate (the peak for "onecycle"); None picks 6e-3 for "onecycle" and the original's
    # 2e-4 for "constant". Adam's eps is Keras' 1e-7, as in the original.
    lr: float | None = None
    # Largest gradient norm per step; 0 disables clipping, as in the original. Clipping keeps the high
    # one-cycle peak stable: without it, a 8e-3 peak collapsed on a photo pair (16 dB instead of 25).
    grad_clip: float = 0.5
    # Arithmetic of the network: "bf16" runs it under bfloat16 autocast (about twice as fast where the
    # hardware has bf16 units; the maps and the loss stay float32), "fp32" as the original, "auto"
    # picks bf16 on CUDA GPUs and CPUs with native bf16 instructions, fp32 elsewhere.
    precision: str = "auto"
    # Warp displacement at map value 1, as a fraction of the image's height (y) or width (x).
    warp_scale: float = 0.05
    # Mult-map strength: colour factor is max(0.1, 1 + mult * mult_scale).
    mult_scale: float = 0.4
    # Add-map strength: colour offset is add * 2 * add_scale (images live in [-1, 1]).
    add_scale: float = 0.4
    # Add colour before multiplying instead of after.
    add_first: bool = False
    # Frames rendered from A (first) to B (last), both included.
    frames: int = 100
    # Seconds of each segment (one per segment of a chain, one for a pair), instead of `frames`:
    # a segment of d seconds gets round(d * fps) + 1 frames, both ends included. Empty: `frames` each.
    durations: tuple[float, ...] = ()
    # Playback rate of the video outputs, frames per second.
    fps: float = 45.0
    # Timing of the frames between A and B: "linear", or easing "in" (slow start), "out" (slow end)
    # or "in-out" (both).
    ease: str = "linear"
    # Seconds to show A before the morph and B after it (frames repeated: round(hold * fps) each).
    hold: float = 0.0
    # Width of every output in pixels, aspect kept; 0 keeps the first image's own size. The maps are
    # resolution-free, so this only changes the size the images are rendered at.
    width: int = 0
    # Largest width of morph.gif in pixels, aspect kept; 0 keeps the output size. GIFs of large
    # photos get very big (every frame is stored with its own palette).
    gif_width: int = 0
    # Colours of morph.gif: "clip" maps every frame to one 256-colour palette chosen for the whole
    # morph (no flicker, one colour table); "frame" gives each frame its own 256 colours.
    gif_palette: str = "clip"
    # Seed of the network's initial weights; the same seed gives the same morph on a CPU.
    seed: int = 0
    # "auto" picks CUDA, then Apple MPS, then CPU; or name a torch device such as "cpu" or "cuda:1".
    device: str = "auto"
    # How B is fitted to A's frame when their sizes differ: "crop" (scale to cover, crop the
    # overflow), "pad" (scale to fit inside, pad with `background`) or "stretch" (resize, ignore aspect).
    fit: str = "crop"
    # Colour that transparent pixels are composited onto, and padding colour: a name or #rrggbb.
    background: str = "white"

    def __post_init__(self) -> None:
        # Durations arrive as lists from JSON and the command line; a tuple keeps the config immutable.
        object.__setattr__(self, "durations", tuple(self.durations))

    def validate(self) -> MorphConfig:
        """Check every field; return self so calls can chain.

        Raises:
            ConfigError: naming the first field out of range, its value and what is allowed.
        """
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"unknown {name.replace('_', ' ')} {value!r}; choose one of: {', '.join(allowed)}")
        _require(self.size >= 8, "size", self.size, "an integer of at least 8")
        _require(self.steps >= 1, "steps", self.steps, "a positive integer")
        _require(self.refine >= 0, "refine", self.refine, "0 (none) or a positive number of steps")
        _require(self.frames >= 2, "frames", self.frames, "an integer of at least 2 (first and last)")
        _require(self.gif_width >= 0, "gif_width", self.gif_width, "0 (native size) or a positive width")
        _require(self.width == 0 or self.width >= 4, "width", self.width, "0 (native size) or a width of at least 4")
        for value in self.durations:
            _require(math.isfinite(value) and value > 0, "durations", value, "positive numbers of seconds")
        for name in ("lr", "fps"):
            value = getattr(self, name)
            if name == "lr" and value is None:
                continue
            _require(math.isfinite(value) and value > 0, name, value, "a positive number")
        for name in ("warp_scale", "mult_scale", "add_scale", "grad_clip", "hold"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, name, value, "a number of at least 0")
        return self

    def segment_frames(self, segments: int) -> list[int]:
        """Frames of each of ``segments`` segments, both ends included: ``frames``, or from ``durations``.

        >>> MorphConfig(durations=(1.0, 0.5), fps=10).segment_frames(2)
        [11, 6]

        Raises:
            ConfigError: ``durations`` does not give one duration per segment.
        """
        if not self.durations:
            return [self.frames] * segments
        if len(self.durations) != segments:
            raise ConfigError(f"--durations gives {len(self.durations)} duration(s) for {segments} segment(s); "
                              f"give one per segment")
        return [max(2, round(seconds * self.fps) + 1) for seconds in self.durations]

    @property
    def frame_pacing(self) -> str:
        """``pacing`` with "auto" resolved: "even" for the sharp mode, "linear" for classic."""
        if self.pacing != "auto":
            return self.pacing
        return "linear" if self.mode == "classic" else "even"

    @property
    def learning_rate(self) -> float:
        """``lr``, or the schedule's default when ``lr`` is None."""
        return DEFAULT_LR[self.schedule] if self.lr is None else self.lr

    def to_dict(self) -> dict[str, Any]:
        """Fields as a plain dict, for JSON."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MorphConfig:
        """Build from a dict such as :meth:`to_dict` gives; unknown keys raise ConfigError.

        Fields missing from ``data`` take their default, or for a file written before the field
        existed, the value it was made with (:data:`FORMER`).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**{**FORMER, **data})


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag} must be {expected}, got {value!r}")
