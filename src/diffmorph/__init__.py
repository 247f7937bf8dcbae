"""diffmorph: morph any two (or more) images into each other without landmarks, prompts or pretrained weights.

>>> import diffmorph
>>> result = diffmorph.morph(["a.png", "b.png"], steps=500)        # doctest: +SKIP
>>> diffmorph.export(result, "out", formats=["mp4", "gif"])        # doctest: +SKIP

The names below are imported when first used, so that ``import diffmorph`` and the command's start-up do
not load PyTorch until a morph needs it.
"""

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING

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

_LAZY = {
    "batch": "diffmorph.batch",
    "EvalReport": "diffmorph.evaluate", "evaluate": "diffmorph.evaluate",
    "ExportReport": "diffmorph.export", "export": "diffmorph.export",
    "Params": "diffmorph.params",
    "MorphResult": "diffmorph.pipeline", "Segment": "diffmorph.pipeline", "load_maps": "diffmorph.pipeline",
    "morph": "diffmorph.pipeline", "render": "diffmorph.pipeline", "resolve_device": "diffmorph.device",
    "Plan": "diffmorph.plan", "make_plan": "diffmorph.plan",
}

if TYPE_CHECKING:
    from diffmorph.batch import batch
    from diffmorph.device import resolve_device
    from diffmorph.evaluate import EvalReport, evaluate
    from diffmorph.export import ExportReport, export
    from diffmorph.params import Params
    from diffmorph.pipeline import MorphResult, Segment, load_maps, morph, render
    from diffmorph.plan import Plan, make_plan


class _Package(types.ModuleType):
    """This package: importing its submodules ``batch``, ``evaluate``, ``export`` and ``render`` would bind those
    names to the modules and hide the functions of the same names, so the functions win (the modules stay
    importable)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("batch", "evaluate", "export", "render") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffmorph' has no attribute {name!r}")


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
    "Plan",
    "Segment",
    "__version__",
    "batch",
    "evaluate",
    "export",
    "load_maps",
    "make_plan",
    "morph",
    "render",
    "resolve_device",
]
