"""How many CPU threads a morph computes with.

PyTorch's CPU kernels run on one OpenMP thread per core and wait at every step for the slowest. Where another
process keeps a core busy, the thread on that core runs only in the time slices it is given and every step waits
for it: a fit with two threads on two cores, one of them taken, ran 4 to 10 times slower than with one thread
(docs/benchmarks.md). So, unless told otherwise, a morph uses as many threads as the machine has idle cores, read
from the kernel's CPU time counters (/proc/stat) over a short window; where those cannot be read (not Linux), or
``OMP_NUM_THREADS`` is set, PyTorch's own choice is kept.

Frames are another matter: each is independent of the others, and one frame's operations are too short for
several threads to share well (two threads on one frame cost about 40 % more CPU time than one for the same wall
time). So :func:`frame_map` renders as many frames at once as there are threads, one thread each.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

Item, Result = TypeVar("Item"), TypeVar("Result")
Mapper = Callable[[Callable[[Item], Result], Iterable[Item]], Iterator[Result]]
"""``map``'s signature: ``mapper(function, items)`` yields ``function(item)`` for each item, in order."""

STAT = Path("/proc/stat")


@dataclass(frozen=True)
class ThreadParams:
    """How idle cores are counted (see the module docstring)."""

    window_s: float = 0.1  # least time the machine's load is watched: 10 clock ticks of each core at 100 Hz
    spare: float = 0.5  # a core counts as idle when at least this much of it was: a busy process keeps one all taken


@dataclass(frozen=True)
class CpuTimes:
    """The machine's busy and total CPU time and this process's own, at one moment, in seconds."""

    at: float
    busy: float
    total: float
    own: float

    @staticmethod
    def now() -> CpuTimes | None:
        """The counters now, or None where the kernel does not show them."""
        try:
            fields = [float(value) for value in STAT.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle and waiting for I/O
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal; guest is counted in user
        times = os.times()
        return CpuTimes(time.monotonic(), (total - idle) / tick, total / tick, times.user + times.system)


def idle_cores(since: CpuTimes | None = None, params: ThreadParams = ThreadParams()) -> float | None:
    """How many of the machine's cores other processes left idle since ``since`` (None: over the next
    ``params.window_s``), at least that long; None where the counters cannot be read."""
    start = since or CpuTimes.now()
    if start is None:
        return None
    wait = params.window_s - (time.monotonic() - start.at)
    if wait > 0:
        time.sleep(wait)
    end = CpuTimes.now()
    return None if end is None else idle_between(start, end, os.cpu_count() or 1)


def idle_between(start: CpuTimes, end: CpuTimes, cores: int) -> float | None:
    """How many of ``cores`` other processes than this one left idle from ``start`` to ``end`` (None: no time
    passed on the counters).

    >>> idle_between(CpuTimes(0.0, 0.0, 0.0, 0.0), CpuTimes(1.0, 1.5, 2.0, 0.5), cores=2)  # 0.5 s were this one's
    1.0
    """
    if end.total <= start.total:
        return None
    others = max(0.0, (end.busy - start.busy) - (end.own - start.own))  # this process's own work does not count
    return cores * (1.0 - others / (end.total - start.total))


def chosen_threads(requested: int = 0, since: CpuTimes | None = None, params: ThreadParams = ThreadParams()
                   ) -> int:
    """The threads to use: ``requested`` where it is not 0; else PyTorch's own count where ``OMP_NUM_THREADS``
    is set, or where idle cores cannot be counted; else as many as are idle, at least 1."""
    import torch

    if requested > 0:
        return requested
    default = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return default
    idle = idle_cores(since, params)
    if idle is None:
        return default
    return max(1, min(default, int(idle + params.spare)))


@contextlib.contextmanager
def using_threads(requested: int = 0, since: CpuTimes | None = None, params: ThreadParams = ThreadParams()
                  ) -> Iterator[int]:
    """PyTorch's and OpenCV's CPU threads set to :func:`chosen_threads` for the block, then set back; yields the
    count."""
    count = chosen_threads(requested, since, params)
    with _threads_set(count):
        yield count


@contextlib.contextmanager
def _threads_set(count: int) -> Iterator[None]:
    """PyTorch's and OpenCV's CPU threads set to ``count`` for the block, then set back."""
    import cv2
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


@contextlib.contextmanager
def frame_map(device: torch.device, ahead: int = 2, most: int | None = None) -> Iterator[Mapper]:
    """A :data:`Mapper` that renders on ``device``: on a CPU with several PyTorch threads, as many items at once on
    as many threads of its own (at most ``most``), PyTorch and OpenCV set to one thread each for the block;
    elsewhere ``map``.

    Results come back in order; at most ``ahead`` items a thread are started before the caller takes the first
    of them, so memory does not grow with the count. Items not started when the block ends are dropped.
    """
    import torch

    threads = torch.get_num_threads()
    workers = min(threads, most or threads)
    if device.type != "cpu" or workers < 2:
        yield map
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="diffmorph-frames")

    def mapped(function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        started: collections.deque[Future[Result]] = collections.deque()
        try:
            for item in items:
                started.append(pool.submit(function, item))
                if len(started) >= ahead * workers:
                    yield started.popleft().result()
            while started:
                yield started.popleft().result()
        finally:
            for future in started:
                future.cancel()

    with _threads_set(1):
        try:
            yield mapped
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
