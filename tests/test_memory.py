"""The suite's memory meter (tests/memory.py) sees what its child processes hold."""

from __future__ import annotations

import subprocess
import sys

import pytest

from memory import PeakMemory

pytestmark = pytest.mark.skipif(not PeakMemory.available(), reason="needs Linux's /proc")


def test_the_meter_counts_a_child_process_memory():
    meter = PeakMemory()
    meter.start()
    subprocess.run([sys.executable, "-c", "import time; held = b'x' * (300 << 20); time.sleep(1.5)"], check=True)
    peak = meter.stop()
    assert 300 << 20 <= peak < 2 << 30
