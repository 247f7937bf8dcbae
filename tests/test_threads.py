"""The CPU thread count: as asked, PyTorch's own where OMP_NUM_THREADS is set, else the machine's idle cores."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from diffmorph.budget import Budget, frames_at_once
from diffmorph.threads import (
    CpuTimes,
    ThreadParams,
    chosen_threads,
    frame_map,
    idle_between,
    idle_cores,
    using_threads,
)

WATCH = ThreadParams(window_s=0.6)


def test_a_count_asked_for_is_used_and_set_back_afterwards():
    before = torch.get_num_threads()
    with using_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert chosen_threads(3) == 3


def test_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert chosen_threads(0) == torch.get_num_threads()


def test_idle_cores_leave_out_this_process_and_count_the_others():
    start = CpuTimes(at=0.0, busy=10.0, total=40.0, own=1.0)
    # 4 cores for 1 s: 4 s of CPU time, 3 of them busy, 1 of those this process's own.
    assert idle_between(start, CpuTimes(at=1.0, busy=13.0, total=44.0, own=2.0), cores=4) == pytest.approx(2.0)
    assert idle_between(start, CpuTimes(at=1.0, busy=10.0, total=44.0, own=1.0), cores=4) == pytest.approx(4.0)
    assert idle_between(start, start, cores=4) is None


@pytest.mark.skipif(CpuTimes.now() is None, reason="needs the kernel's CPU counters (/proc/stat)")
def test_a_busy_process_is_seen_on_the_machine():
    quiet = idle_cores(params=WATCH)
    if quiet < (os.cpu_count() or 1) - 0.5:
        pytest.skip(f"the machine is busy already ({quiet:.1f} idle cores): a busy process would not show")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        idle_cores(params=ThreadParams(window_s=0.3))  # while it starts
        loaded = idle_cores(params=WATCH)
    finally:
        busy.kill()
        busy.wait()
    assert loaded < quiet - 0.6


def test_frames_are_made_on_threads_of_one_thread_each_and_come_back_in_order():
    cpu = torch.device("cpu")
    started, names, counts = [], set(), set()

    def slow_square(item: int) -> int:
        started.append(item)
        names.add(threading.current_thread().name)
        counts.add(torch.get_num_threads())
        time.sleep(0.02 * (item % 3))  # finishing out of order
        return item * item

    with using_threads(2), frame_map(cpu, ahead=2) as mapper:
        squares = mapper(slow_square, range(40))
        assert [next(squares) for _ in range(3)] == [0, 1, 4]
        time.sleep(0.2)
        assert len(started) <= 3 + 2 * 2  # no more than two items a thread ahead of the caller
        assert list(squares) == [k * k for k in range(3, 40)]
        assert counts == {1} and len(names) == 2 and threading.current_thread().name not in names
    with using_threads(2):
        with frame_map(cpu) as mapper:
            pass
        assert torch.get_num_threads() == 2  # set back
    with using_threads(1), frame_map(cpu) as mapper:
        assert mapper is map  # one thread: in the caller's
    with using_threads(2), frame_map(cpu, most=1) as mapper:
        assert mapper is map and torch.get_num_threads() == 2  # room for one frame: made as before, on both threads
    with frame_map(torch.device("meta")) as mapper:
        assert mapper is map  # not a CPU: the device's own queue orders the work


def test_a_failing_frame_stops_the_rest():
    done = []

    def failing(item: int) -> int:
        if item == 5:
            raise ValueError("frame 5")
        time.sleep(0.01)
        done.append(item)
        return item

    cpu = torch.device("cpu")
    with using_threads(2), pytest.raises(ValueError, match="frame 5"), frame_map(cpu) as mapper:
        list(mapper(failing, range(1000)))
    assert len(done) < 20  # what was queued went with the error


def test_the_frames_made_at_once_fit_in_half_the_free_memory():
    budget = Budget()
    frame = budget.frame_bytes_per_pixel * 3840 * 2160  # about 530 MB a 4K frame
    assert frames_at_once(3840, 2160, budget, available=int(8 * frame)) == 4
    assert frames_at_once(3840, 2160, budget, available=int(frame)) == 1  # at least one, whatever is free
    assert frames_at_once(1024, 1024, budget, available=16 * 2**30) > 64
