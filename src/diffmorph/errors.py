"""Errors that diffmorph reports to users.

Every problem a user can cause (a bad file, a bad setting, an unwritable folder) raises a
:class:`DiffmorphError` whose message is one line that names the problem and what to do. The CLI
prints that line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class DiffmorphError(Exception):
    """A problem with the user's input, settings or environment, described in one line."""


class InputImageError(DiffmorphError):
    """An input image is missing, unreadable, truncated, too large or too small."""


class ConfigError(DiffmorphError, ValueError):
    """A setting is out of range or unknown."""


class MapsFileError(DiffmorphError):
    """A maps file is corrupt, not a diffmorph maps file, or from an incompatible version."""


class OutputError(DiffmorphError):
    """The output folder cannot be created or written."""


class FitDivergedError(DiffmorphError):
    """The fit's loss became NaN or infinite."""
