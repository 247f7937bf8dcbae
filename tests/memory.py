"""The test suite's peak memory, with every process it starts (morphs, the page's server, Ray's workers): sampled
from /proc while the suite runs and printed at its end, so CI shows it (Linux only)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

# Runs the command line on its arguments and prints its own peak resident memory in bytes on stderr's last line:
# VmHWM, the peak since this process's exec. (ru_maxrss would keep the peak of the process it was forked from,
# the test suite itself, across exec.)
PEAK_SCRIPT = ("import sys\nfrom diffmorph.cli import main\ncode = main(sys.argv[1:])\n"
               "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0].split()[1]\n"
               "print(int(peak) * 1024, file=sys.stderr)\nsys.exit(code)")
INTERVAL_S = 0.2  # a morph's peak lasts seconds; a test's subprocess at least a few tenths of one


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue  # the process ended while it was being read
    return found


def proportional_kib(pid: int) -> int:
    """``pid``'s proportional set size in KiB (shared pages divided among their processes), 0 once it ended."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class PeakMemory:
    """Samples the memory of this process and its descendants on a thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def available() -> bool:
        return Path(f"/proc/{os.getpid()}/smaps_rollup").exists()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """The peak in bytes."""
        self._stopped.set()
        self._thread.join()
        return self.peak_kib * 1024

    def _sample(self) -> None:
        while not self._stopped.wait(INTERVAL_S):
            total = sum(proportional_kib(pid) for pid in descendants(os.getpid()))
            self.peak_kib = max(self.peak_kib, total)
