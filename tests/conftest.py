"""Shared fixtures; the images themselves come from synthetic.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from synthetic import blobs


@pytest.fixture
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two small PNG files of different content."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(blobs(40, 48, seed=1)).save(a)
    Image.fromarray(blobs(40, 48, seed=2)).save(b)
    return a, b
