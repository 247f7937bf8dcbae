"""A run's plan: everything decided before any work starts, computed once from the request.

The CLI, the page, batch and the Python API build it the same way, :func:`make_plan` from the settings, the
number of images and the device, and read from it: the resolved device, the output names, the timeline of
frames, the progress totals and the limits a request must keep. Nothing downstream derives these again; what
can only be known from the images (their size) is checked against the plan with :meth:`Plan.check_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

from diffmorph.budget import Budget, check_frames, check_size, frames_at_once
from diffmorph.config import DEFAULT_FORMATS, RENDER_SETTINGS, MorphConfig
from diffmorph.device import resolve_device
from diffmorph.errors import ConfigError
from diffmorph.io.outputs import check_formats, output_names
from diffmorph.optimize import FitParams
from diffmorph.render.pacing import timeline


@dataclass(frozen=True)
class Plan:
    """What one run does, decided before it starts.

    Attributes:
        config: the validated settings, the render settings included.
        images: how many images the morph passes through.
        loop: whether a last segment goes from the last image back to the first.
        formats: the animations and extras to write, validated, in order.
        pingpong: play forward, then backward.
        device: where the fit and the frames run; None in a plan made where the work will not run (batch's
            driver), resolved by :meth:`resolved` where it does.
        fit: the fit's tuned numbers, for the refinement's size.
        budget: the limits the request is held to.
    """

    config: MorphConfig
    images: int
    loop: bool = False
    formats: tuple[str, ...] = DEFAULT_FORMATS
    pingpong: bool = False
    device: torch.device | None = None
    fit: FitParams = field(default=FitParams(), repr=False)
    budget: Budget = field(default=Budget(), repr=False)

    @property
    def segments(self) -> int:
        """Segments of the morph: one per consecutive pair, and one more with ``loop``."""
        return self.images - 1 + self.loop

    @cached_property
    def timeline(self) -> list[tuple[int, float]]:
        """Every frame of each animation as ``(segment, t)`` (see :func:`diffmorph.render.timeline`)."""
        return timeline(self.frame_counts, self.config.fps, self.config.ease, self.config.hold, pingpong=self.pingpong)

    @property
    def frame_counts(self) -> list[int]:
        """Frames of each segment, both ends included."""
        return self.config.segment_frames(self.segments)

    @property
    def frames(self) -> int:
        """Frames in each animation: the progress total of rendering."""
        return len(self.timeline)

    @property
    def fit_steps(self) -> int:
        """Steps of the whole fit, every segment's network and refinement: the progress total of fitting."""
        return (self.config.steps + self.config.refine) * self.segments

    @property
    def refine_side(self) -> int:
        """Side in pixels of the refinement's working size."""
        return self.fit.refine_side(self.config.size)

    @property
    def outputs(self) -> list[str]:
        """Every name the export writes into its folder."""
        return output_names(self.formats, self.segments)

    def check_size(self, width: int, height: int, available: int | None = None) -> None:
        """Refuse, in one line naming the option to lower, a first image of ``width`` x ``height`` whose
        morph this machine cannot finish (see :func:`diffmorph.budget.check_size`)."""
        check_size(self.config, width, height, self.refine_side, self.budget, available)

    def frames_at_once(self, width: int, height: int) -> int | None:
        """How many frames of ``width`` x ``height`` the free memory holds at once (see
        :func:`diffmorph.budget.frames_at_once`); None where it is unknown."""
        return frames_at_once(width, height, self.budget)

    def resolved(self) -> Plan:
        """This plan with its device resolved from the config, where it was not yet."""
        return self if self.device is not None else replace(self, device=resolve_device(self.config.device))


def make_plan(config: MorphConfig, images: int, *, loop: bool = False, formats: tuple[str, ...] | list[str] =
              DEFAULT_FORMATS, pingpong: bool = False, device: str | torch.device | None = None,
              resolve: bool = True, fit: FitParams = FitParams(), budget: Budget = Budget()) -> Plan:
    """Check a request and decide everything it does before any image is decoded.

    Args:
        config: the settings (validated here).
        images: how many images the morph passes through (two or more).
        device: a ``--device`` value or a device; by default the config's.
        resolve: resolve the device now (False where the work runs elsewhere: batch's driver).

    Raises:
        ConfigError: a bad setting, format or device, no duration per segment, or an animation over the
            frame limit.
    """
    if images < 2:
        raise ConfigError(f"a morph needs at least 2 images, got {images}")
    config = config.validate()
    chosen = device if device is not None else config.device
    plan = Plan(config, images, loop, check_formats(formats), pingpong,
                resolve_device(chosen) if resolve else None, fit, budget)
    counts = plan.frame_counts  # checked before the timeline is built: a huge count would take long to list
    check_frames(sum(counts), budget, "lower --frames or --durations")
    check_frames(plan.frames, budget, "lower --frames, --durations or --hold")
    return plan


def render_config(config: MorphConfig, settings: dict[str, object]) -> MorphConfig:
    """``config`` with the render settings that are not None changed, validated.

    Raises:
        ConfigError: a name that is not a render setting, or a value out of range.
    """
    unknown = sorted(set(settings) - set(RENDER_SETTINGS))
    if unknown:
        raise ConfigError(f"not a render setting: {', '.join(unknown)}")
    changes = {k: v for k, v in settings.items() if v is not None}
    if "frames" in changes and "durations" not in changes:
        changes["durations"] = ()  # frames asked for now replace durations stored with the fit
    return replace(config, **changes).validate()
