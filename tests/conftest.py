"""Shared fixtures; the images themselves come from synthetic.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from memory import PeakMemory
from synthetic import blobs

_PEAK = pytest.StashKey[PeakMemory]()  # the suite's memory meter, where /proc shows memory


@pytest.fixture
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two small PNG files of different content."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(blobs(40, 48, seed=1)).save(a)
    Image.fromarray(blobs(40, 48, seed=2)).save(b)
    return a, b


def pytest_sessionstart(session: pytest.Session) -> None:
    if PeakMemory.available():
        session.config.stash[_PEAK] = PeakMemory()
        session.config.stash[_PEAK].start()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    meter = config.stash.get(_PEAK, None)
    if meter is not None:
        terminalreporter.write_line(f"peak memory of the suite and its processes: {meter.stop() / 2**30:.2f} GiB")

