"""Nothing a batch started outlives it: a watcher that ends the batch's processes once the batch has ended.

A private local Ray starts a dozen processes; its own clean-up runs only when the batch exits normally, and
some of them (its per-node agents) wait minutes before they notice that the batch was killed outright. The
watcher is a small process of its own session, started by the batch before Ray: it keeps the list of every
process descended from the batch since then (with each one's start time, so that a reused process id is never
taken for one of them) and, the moment the batch is gone, however it ended, or when the batch tells it it is
done (SIGTERM), kills those still alive. Processes the batch's program had before are never touched. Linux
only (it reads ``/proc``); elsewhere nothing is watched.

Run as ``python -m diffmorph.reaper PID``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReaperParams:
    """How the watcher looks."""

    every: float = 0.25  # seconds between looks: a process started and orphaned within one is missed


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent id, start time in clock ticks)`` of a living process, or None (a zombie is not living)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the name, which may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[19]))


def descendants(root: int) -> dict[int, int]:
    """Every living descendant of process ``root`` as ``{pid: start time}``."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            children.setdefault(stat[0], []).append((int(name), stat[1]))
    found, waiting = {}, [root]
    while waiting:
        for pid, started in children.get(waiting.pop(), []):
            if pid not in found:
                found[pid] = started
                waiting.append(pid)
    return found


def watch(root: int, params: ReaperParams = ReaperParams(), ready: Callable[[], None] = lambda: None) -> int:
    """Follow the processes ``root`` starts from now on until ``root`` ends or this process gets SIGTERM, then
    kill those still alive; return how many.

    Args:
        ready: called once the processes ``root`` already has are known (they are left alone).
    """
    done = []
    signal.signal(signal.SIGTERM, lambda signum, frame: done.append(signum))
    first = _stat(root)
    before = set(descendants(root))
    ready()
    seen: dict[int, int] = {}
    while first is not None and not done and _stat(root) == first:
        seen.update((pid, started) for pid, started in descendants(root).items() if pid not in before)
        time.sleep(params.every)
    killed = 0
    for pid, started in seen.items():
        if pid != os.getpid() and (stat := _stat(pid)) is not None and stat[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def start_watching(pid: int | None = None) -> subprocess.Popen | None:
    """Start the watcher of process ``pid`` (this one by default) in a session of its own, so that a signal to
    the batch's process group does not end it too, and wait until it knows the processes ``pid`` has now;
    None where there is no ``/proc``. SIGTERM it when the work is done: it ends what is left of it."""
    if not os.path.isdir("/proc/self"):
        return None
    watcher = subprocess.Popen([sys.executable, "-m", "diffmorph.reaper", str(pid or os.getpid())],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    watcher.stdout.readline()  # "watching", or nothing where it failed to start
    watcher.stdout.close()
    return watcher


def _say_ready() -> None:
    print("watching", flush=True)
    sys.stdout.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the batch is the batch's to handle
    watch(int(sys.argv[1]), ready=_say_ready)
