"""Where a segment's warp started, as a record: found before the fit, kept with the maps, told by every command."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from diffmorph.start.move import Alignment
from diffmorph.start.subject import SubjectMove


@dataclass(frozen=True)
class StartRecord:
    """What a fit's warp started from, without its maps.

    Attributes:
        align: the ``align`` setting it was found under.
        move: the move of the whole picture the warp started from, or None.
        bent: whether the warp started from that move (or none) bent region by region.
        subject: the move of the pair's one subject the warp carried it by, or None.
        line: for a maps file that stored a line of text only (or nothing), that line; None otherwise.
        guide: one line on what the user's guidance (points, masks) did, or None.
        points: the point hints the fit honoured, ``(ay, ax, by, bx)`` in fractions of the frame each.
    """

    align: str
    move: Alignment | None = None
    bent: bool = False
    subject: SubjectMove | None = None
    line: str | None = None
    guide: str | None = None
    points: tuple[tuple[float, float, float, float], ...] = ()

    def describe(self) -> str | None:
        """One line on where the warp started, or None where it started from nothing (and no mask held it)."""
        line = self.line if self.line is not None else describe(self.move, self.bent, self.subject, self.align)
        return "; ".join(part for part in (line, self.guide) if part) or None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain values, for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartRecord:
        """The record :meth:`to_dict` gave, checked field by field.

        Raises:
            ValueError: a missing or unknown field, or a value of the wrong kind or not finite.
        """
        fields = {"align", "move", "bent", "subject", "line"}
        if not isinstance(data, dict) or not fields <= set(data) <= fields | {"guide", "points"}:
            raise ValueError("a start record is not the one diffmorph writes")
        data = {"guide": None, "points": [], **data}  # records written before guidance existed
        if not isinstance(data["align"], str) or not isinstance(data["bent"], bool) or not all(
                data[name] is None or isinstance(data[name], str) for name in ("line", "guide")):
            raise ValueError("a start record has a field of the wrong kind")
        move = data["move"] and Alignment(_number(data["move"]["scale"]), _pair(data["move"]["shift"]),
                                          _number(data["move"]["confidence"]), _number(data["move"]["angle"]))
        subject = data["subject"] and SubjectMove(_number(data["subject"]["scale"]), _pair(data["subject"]["centre_a"]),
                                                  _pair(data["subject"]["centre_b"]),
                                                  _number(data["subject"]["overlap"]))
        points = tuple(_point(point) for point in data["points"])
        return cls(data["align"], move or None, data["bent"], subject or None, data["line"], data["guide"], points)


def describe(move: Alignment | None, bent: bool, subject: SubjectMove | None = None, how: str = "auto"
             ) -> str | None:
    """One line for a log of where a warp started, or None where it started from nothing.

    ``how`` is the ``align`` setting: where it asked for the subject's move and none was found, the line says so.
    """
    if subject is not None or how == "subject":
        line = subject.describe() if subject else "aligned: no one subject stands out of both images alike"
        return f"{line}; {move.describe().removeprefix('aligned: ')}" if move else line
    if not bent:
        return move.describe() if move else None
    return f"{move.describe()}, then bent region by region" if move else "aligned: bent region by region"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"a start record holds {value!r} where a finite number belongs")
    return float(value)


def _point(value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ValueError(f"a start record holds {value!r} where a point pair belongs")
    numbers = tuple(_number(v) for v in value)
    if not all(0.0 <= v <= 1.0 for v in numbers):
        raise ValueError("a start record holds a point outside the frame")
    return numbers  # type: ignore[return-value]


def _pair(value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"a start record holds {value!r} where two numbers belong")
    return _number(value[0]), _number(value[1])
