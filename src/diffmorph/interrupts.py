"""How a run ends on a signal: SIGTERM and SIGHUP raised where the program is, as Ctrl-C raises
KeyboardInterrupt, so that every output folder on the way out removes its partial files."""

from __future__ import annotations

import signal
import sys


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as Ctrl-C raises KeyboardInterrupt: every output folder
    on the way out removes its partial files."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second signal must not cut the clean-up short
        signal.signal(other, signal.SIG_IGN)
    raise Signalled(signum) if signum != signal.SIGINT else KeyboardInterrupt()


def stop_on_signals() -> None:
    """Make SIGINT, SIGTERM and SIGHUP end the program through its own clean-up (see :class:`Signalled`)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise)


def interrupted(exc: KeyboardInterrupt, consequence: str = "") -> int:
    """Say which signal ended the run; return the exit status the shell expects of it (128 + its number)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    print(f"diffmorph: interrupted ({signal.Signals(signum).name}){consequence}", file=sys.stderr)
    return 128 + signum
