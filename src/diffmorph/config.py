"""The one configuration object: every setting of a morph, with its default, help, choices and group.

CLI flags map 1:1 to these fields (``--warp-scale`` is ``warp_scale``); each field's help, choices and group
are written once here, in its metadata, and feed the CLI's help, the README's options table and
:meth:`MorphConfig.validate`. The config is written next to every output as ``config.json`` and stored inside
the maps file, so a morph can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
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
GIF_PALETTES = ("clip", "frame")
# The CLI's option groups, in the order its help shows them.
GROUPS = ("input and output", "fit", "start", "frames and timing", "encoding", "expert")
# Settings that `diffmorph render` can change without fitting again.
RENDER_SETTINGS = ("mode", "pacing", "frames", "durations", "fps", "ease", "hold", "width", "gif_width",
                   "gif_palette")
# Values that files written before a field existed were made with (where the default has changed).
FORMER = {"align": "none", "refine": 0}
DEFAULT_LR = {"onecycle": 6e-3, "constant": 2e-4}


def option(default: Any, help: str, group: str, choices: tuple[str, ...] | None = None, shown: str | None = None
           ) -> Any:
    """A config field with its user-facing help, group and choices (and how its default is shown, if not as is)."""
    assert group in GROUPS, group
    metadata = {"help": help, "group": group, "choices": choices, "shown": shown}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class MorphConfig:
    """Settings of one morph. The fit follows the original method, on a faster schedule.

    Create with keyword arguments; call :meth:`validate` (done by :func:`diffmorph.morph`) to get a
    one-line :class:`~diffmorph.errors.ConfigError` for out-of-range values. docs/method.md says why each
    default is what it is.
    """

    mode: str = option("sharp", "how frames are made from the maps: sharp keeps fine detail at full contrast and "
                       "carries content along straight lines; classic is the original", "frames and timing", MODES)
    pacing: str = option("auto", "timing of the maps along the morph: even (about the same change at every "
                         "frame), linear (the maps scaled by t, as the original), auto (even for sharp, linear "
                         "for classic)", "frames and timing", PACINGS)
    objective: str = option("classic", "what the fit minimises: classic (the original loss) or coarse-to-fine "
                            "(blurred images, colour held back at first, so the warp may carry what moved far; a "
                            "second opinion when content shows twice)", "fit", OBJECTIVES)
    align: str = option("auto", "where the warp starts: global (the move of the whole picture), local (that move "
                        "bent region by region: two faces), subject (one compact subject on a plain ground carried "
                        "across), auto (the move, bent where that makes the pictures agree, else the subject "
                        "carried where both have one), none (no warp, as the original)", "start", ALIGNS)
    size: int = option(128, "working resolution of the fit (square); outputs keep the images' own size", "fit")
    steps: int = option(250, "gradient steps of the fit", "fit")
    refine: int = option(100, "steps refining the fitted maps themselves at twice --size; 0 keeps the network's "
                         "maps, as the original", "fit")
    schedule: str = option("onecycle", "learning-rate schedule: onecycle (warm up, then anneal) or constant (the "
                           "original)", "expert", SCHEDULES)
    lr: float | None = option(None, "Adam learning rate, the peak for onecycle", "expert",
                              shown="6e-3 / 2e-4 (onecycle / constant)")
    grad_clip: float = option(0.5, "largest gradient norm per step; 0 disables clipping, as the original", "expert")
    precision: str = option("auto", "network arithmetic: bf16 autocast, fp32 (the original), or auto (bf16 on CUDA "
                            "and on CPUs with native bf16)", "expert", PRECISIONS)
    warp_scale: float = option(0.05, "warp displacement at map value 1, as a fraction of the image size", "expert")
    mult_scale: float = option(0.4, "strength of the colour-factor map: factor max(0.1, 1 + mult * this)", "expert")
    add_scale: float = option(0.4, "strength of the colour-offset map: offset add * 2 * this", "expert")
    add_first: bool = option(False, "add the colour offset before applying the colour factor", "expert")
    frames: int = option(100, "frames per segment, both images included", "frames and timing")
    durations: tuple[float, ...] = option((), "seconds of each segment instead of --frames, one per segment: "
                                          "round(d * fps) + 1 frames each", "frames and timing", shown="—")
    fps: float = option(45.0, "frames per second of the animations", "frames and timing")
    ease: str = option("linear", "timing of the frames: linear, in (slow start), out (slow end) or in-out",
                       "frames and timing", EASES)
    hold: float = option(0.0, "seconds each image is shown still before and after its morph", "frames and timing")
    width: int = option(0, "width of every output in pixels, aspect kept; 0 keeps the first image's size",
                        "encoding")
    gif_width: int = option(0, "largest width of morph.gif, aspect kept; 0 keeps the output size", "encoding")
    gif_palette: str = option("clip", "colours of morph.gif: clip (one 256-colour palette for the whole morph, "
                              "no flicker) or frame (256 colours per frame)", "encoding", GIF_PALETTES)
    seed: int = option(0, "seed of the network's initial weights; the same seed gives the same morph on a CPU",
                       "fit")
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps", "input and output")
    fit: str = option("crop", "how images of another size are fitted to the first one's frame: crop (cover and "
                      "centre-crop), pad, stretch", "input and output", FITS)
    background: str = option("white", "colour under transparent pixels and of --fit pad borders (a name or "
                             "#rrggbb)", "input and output")

    def __post_init__(self) -> None:
        # Durations arrive as lists from JSON and the command line; a tuple keeps the config immutable.
        object.__setattr__(self, "durations", tuple(self.durations))

    def validate(self) -> MorphConfig:
        """Check every field; return self so calls can chain.

        Raises:
            ConfigError: naming the first field out of range, its value and what is allowed.
        """
        for item in dataclasses.fields(self):
            allowed = item.metadata["choices"]
            value = getattr(self, item.name)
            if allowed and value not in allowed:
                name = item.name.replace("_", " ")
                raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
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


def flag(name: str) -> str:
    """The CLI flag of a config field.

    >>> flag("gif_width")
    '--gif-width'
    """
    return "--" + name.replace("_", "-")


def shown_default(item: dataclasses.Field) -> str:
    """A field's default as help and the README show it."""
    if item.metadata["shown"]:
        return item.metadata["shown"]
    default = item.default
    if isinstance(default, bool):
        return "off" if not default else "on"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{flag(name)} must be {expected}, got {value!r}")
