"""diffmorph: morph any two (or more) images into each other without landmarks, prompts or pretrained weights.

>>> import diffmorph
>>> result = diffmorph.morph(["a.png", "b.png"], steps=500)        # doctest: +SKIP
>>> diffmorph.export(result, "out", formats=["mp4", "gif"])        # doctest: +SKIP
"""

from diffmorph._version import __version__
from diffmorph.config import MorphConfig
from diffmorph.errors import (
    ConfigError,
    DiffmorphError,
    FitDivergedError,
    InputImageError,
    MapsFileError,
    OutputError,
)
from diffmorph.evaluate import EvalReport, evaluate
from diffmorph.export import ExportReport, export
from diffmorph.params import Params
from diffmorph.pipeline import MorphResult, Segment, load_maps, morph, render, resolve_device

__all__ = [
    "ConfigError",
    "DiffmorphError",
    "EvalReport",
    "ExportReport",
    "FitDivergedError",
    "InputImageError",
    "MapsFileError",
    "MorphConfig",
    "MorphResult",
    "OutputError",
    "Params",
    "Segment",
    "__version__",
    "evaluate",
    "export",
    "load_maps",
    "morph",
    "render",
    "resolve_device",
]
