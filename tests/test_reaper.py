"""The watcher a batch starts: what the batch started ends with it, however it ends; nothing else does."""

import os
import signal
import subprocess
import sys
import time

import pytest

from diffmorph.reaper import _stat

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the watcher reads /proc (Linux)")

PARENT = """
import subprocess, sys, time
from diffmorph.reaper import start_watching
before = subprocess.Popen(["sleep", "60"], start_new_session=True)
watcher = start_watching()
after = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a session of its own, as Ray's agents
print(before.pid, after.pid, watcher.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    return _stat(pid) is not None


def wait_until_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_what_a_killed_process_started_ends_with_it_and_nothing_else():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    before, after, watcher = (int(pid) for pid in parent.stdout.readline().split())
    try:
        time.sleep(0.6)  # the watcher has looked at least twice
        assert alive(after) and alive(watcher)
        parent.kill()  # SIGKILL: the parent cleans up nothing
        parent.wait()
        assert wait_until_gone(after, 5.0), "a process the killed parent started is still running"
        assert wait_until_gone(watcher, 5.0)
        assert alive(before)  # it was there before the watcher: not the watcher's to end
    finally:
        for pid in (before, after):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_watcher_told_the_work_is_done_ends_what_is_left_of_it():
    from diffmorph.reaper import start_watching

    watcher = start_watching()
    straggler = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        time.sleep(0.6)
        watcher.terminate()
        assert watcher.wait(timeout=5) == 0
        assert wait_until_gone(straggler.pid, 5.0)
        assert straggler.wait(timeout=5) == -signal.SIGKILL
    finally:
        straggler.kill()
