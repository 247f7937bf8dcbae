"""Every tuned number of diffmorph in one frozen object, passed to :func:`~diffmorph.morph`,
:func:`~diffmorph.render` and :func:`~diffmorph.export`.

Users rarely change these: the settings of a morph are :class:`~diffmorph.config.MorphConfig`. These are the
thresholds and weights of the heuristics (why each value is what it is: docs/method.md), exposed so that tests
and experiments can change them without touching module state.

>>> from diffmorph.start import StartParams, SubjectParams
>>> Params(start=StartParams(subject=SubjectParams(overlap=0.7))).start.subject.overlap
0.7
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffmorph.optimize import FitParams
from diffmorph.render import FrameParams, PaceParams
from diffmorph.start import StartParams
from diffmorph.start.points import HintParams
from diffmorph.threads import ThreadParams


@dataclass(frozen=True)
class Params:
    """The start's, the fit's, the sharp frames', even pacing's, the thread count's and point hints' tuned
    numbers."""

    start: StartParams = field(default_factory=StartParams)
    fit: FitParams = field(default_factory=FitParams)
    frames: FrameParams = field(default_factory=FrameParams)
    pace: PaceParams = field(default_factory=PaceParams)
    threads: ThreadParams = field(default_factory=ThreadParams)
    hints: HintParams = field(default_factory=HintParams)
