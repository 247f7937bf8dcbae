"""diffmorph: morph any two images into each other without landmarks, prompts or pretrained weights.

>>> import diffmorph
>>> result = diffmorph.morph("a.png", "b.png", steps=500)          # doctest: +SKIP
>>> diffmorph.export(result, "out", formats=["mp4", "gif"])        # doctest: +SKIP
"""

from diffmorph._version import __version__
from diffmorph.api import MorphResult, fit_pair, load_maps, morph, prepare_pair, render, resolve_device, save_maps
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
from diffmorph.sequence import SequenceResult, export_sequence, morph_sequence, render_sequence

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
    "SequenceResult",
    "__version__",
    "evaluate",
    "export",
    "export_sequence",
    "fit_pair",
    "load_maps",
    "morph",
    "morph_sequence",
    "prepare_pair",
    "render",
    "render_sequence",
    "resolve_device",
    "save_maps",
]
