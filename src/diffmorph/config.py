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
GIF_PALETTES = ("clip", "frame", "smooth")
DEFAULT_FORMATS = ("mp4", "gif")  # the outputs a morph writes unless told (--format), wherever it runs
# The CLI's option groups, in the order its help shows them.
GROUPS = ("input and output", "fit", "start", "frames and timing", "encoding", "expert")
# Settings that `diffmorph render` can change without fitting again.
RENDER_SETTINGS = ("mode", "pacing", "frames", "durations", "fps", "ease", "hold", "width", "gif_width",
                   "gif_palette", "threads")
# Fields whose 0 means "the images' own size" rather than a size.
ZERO_MEANS_NATIVE = ("width", "gif_width")
# Values that files written before a field existed were made with (where the default has changed).
FORMER = {"align": "none", "refine": 0}
DEFAULT_LR = {"onecycle": 6e-3, "constant": 2e-4}
DEFAULT_MAX_PIXELS = 50_000_000  # per input image: rendering keeps full-size maps in memory; 50 MP is about 8K x 6K


def option(default: Any, help: str, group: str, choices: tuple[str, ...] | None = None, shown: str | None = None,
           bounds: tuple[float, float] | None = None, expected: str | None = None) -> Any:
    """A config field with its user-facing help, group and choices (and how its default is shown, if not as is).

    Numbers take ``bounds`` (least, most; inclusive) and ``expected``, how an error names them.
    """
    assert group in GROUPS, group
    metadata = {"help": help, "group": group, "choices": choices, "shown": shown, "bounds": bounds,
                "expected": expected}
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
    size: int = option(128, "working resolution of the fit (square); outputs keep the images' own size", "fit",
                       bounds=(8, 1024), expected="an integer from 8 to 1024")
    steps: int = option(250, "gradient steps of the fit", "fit",
                        bounds=(1, 100000), expected="a positive integer up to 100000")
    refine: int = option(100, "steps refining the fitted maps themselves at twice --size (the network then makes "
                         "their smooth part, at 66 x 66); 0 keeps the network's maps, fitted at 96 x 96 as the "
                         "original", "fit",
                         bounds=(0, 100000), expected="0 (none) or a positive number of steps up to 100000")
    schedule: str = option("onecycle", "learning-rate schedule: onecycle (warm up, then anneal) or constant (the "
                           "original)", "expert", SCHEDULES)
    lr: float | None = option(None, "Adam learning rate, the peak for onecycle", "expert",
                              shown="6e-3 / 2e-4 (onecycle / constant)",
                              bounds=(1e-09, 1.0), expected="a positive number up to 1")
    grad_clip: float = option(0.5, "largest gradient norm per step; 0 disables clipping, as the original", "expert",
                              bounds=(0, 1000000.0), expected="a number of at least 0 (0: no clipping) up to 1e6")
    precision: str = option("auto", "network arithmetic: bf16 autocast, fp32 (the original), or auto (bf16 on CUDA "
                            "and on CPUs with native bf16)", "expert", PRECISIONS)
    warp_scale: float = option(0.05, "warp displacement at map value 1, as a fraction of the image size", "expert",
                               bounds=(0, 1), expected="a number from 0 to 1")
    mult_scale: float = option(0.4, "strength of the colour-factor map: factor max(0.1, 1 + mult * this)", "expert",
                               bounds=(0, 10), expected="a number from 0 to 10")
    add_scale: float = option(0.4, "strength of the colour-offset map: offset add * 2 * this", "expert",
                              bounds=(0, 10), expected="a number from 0 to 10")
    add_first: bool = option(False, "add the colour offset before applying the colour factor", "expert")
    frames: int = option(100, "frames per segment, both images included", "frames and timing",
                         bounds=(2, 10000), expected="an integer of at least 2 (first and last) up to 10000")
    durations: tuple[float, ...] = option((), "seconds of each segment instead of --frames, one per segment: "
                                          "round(d * fps) + 1 frames each", "frames and timing", shown="—",
                                          bounds=(0.001, 3600), expected="positive numbers of seconds up to 3600")
    fps: float = option(45.0, "frames per second of the animations", "frames and timing",
                        bounds=(0.1, 240), expected="a positive number from 0.1 to 240")
    ease: str = option("linear", "timing of the frames: linear, in (slow start), out (slow end) or in-out",
                       "frames and timing", EASES)
    hold: float = option(0.0, "seconds each image is shown still before and after its morph", "frames and timing",
                         bounds=(0, 3600), expected="a number of seconds from 0 to 3600")
    width: int = option(0, "width of every output in pixels, aspect kept; 0 keeps the first image's size",
                        "encoding",
                        bounds=(4, 16384), expected="0 (native size) or a width from 4 to 16384")
    gif_width: int = option(512, "largest width of morph.gif, aspect kept (wider GIFs are slow to write and to load: "
                                 "the MP4 keeps the full size); 0 keeps the output size", "encoding",
                            bounds=(1, 16384), expected="0 (native size) or a positive width up to 16384")
    gif_palette: str = option("frame", "colours of morph.gif: frame (256 colours fitted to each frame, so "
                              "gradients keep their colours), smooth (median cut per frame: glows and skies of drawn "
                              "pictures without bands, a file about twice the size; photos stay closer with frame) or "
                              "clip (one 256-colour palette for the whole morph)", "encoding", GIF_PALETTES)
    seed: int = option(0, "seed of the network's initial weights; the same seed gives the same morph on a CPU",
                       "fit",
                       bounds=(0, 9223372036854775807), expected="an integer from 0 to 2**63 - 1")
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps", "input and output")
    threads: int = option(0, "CPU threads; 0 uses as many as the machine has idle cores (OMP_NUM_THREADS, where "
                          "set, is kept)", "input and output",
                          bounds=(0, 1024), expected="0 (idle cores) or a number of threads up to 1024")
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
        for item in dataclasses.fields(self):
            bounds = item.metadata["bounds"]
            value = getattr(self, item.name)
            if bounds is None or value is None or (item.name in ZERO_MEANS_NATIVE and value == 0):
                continue
            for number in value if isinstance(value, tuple) else (value,):
                ok = isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number)
                _require(ok and bounds[0] <= number <= bounds[1], item.name, number, item.metadata["expected"])
        return self

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The outputs' ``(width, height)`` for a first image of ``width`` x ``height``: its own, or ``width``
        wide with its aspect.

        >>> MorphConfig(width=320).output_size(640, 481), MorphConfig().output_size(640, 481)
        ((320, 240), (640, 481))
        """
        if self.width in (0, width):
            return width, height
        return self.width, max(1, round(height * self.width / width))

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
