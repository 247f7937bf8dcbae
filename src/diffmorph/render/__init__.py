"""Frames from fitted maps (:mod:`~diffmorph.render.frames`) and their timing (:mod:`~diffmorph.render.pacing`)."""

from diffmorph.render.frames import PACINGS, FrameParams, Renderer, fidelity, to_uint8
from diffmorph.render.pacing import EASES, PaceParams, Schedule, ease, even_schedule, frame_times, timeline

__all__ = ["EASES", "PACINGS", "FrameParams", "PaceParams", "Renderer", "Schedule", "ease", "even_schedule",
           "fidelity", "frame_times", "timeline", "to_uint8"]
