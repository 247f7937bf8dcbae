"""Reading an animation back as frames: a video file, an animated GIF or WebP, or a folder of images."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from diffmorph.errors import InputImageError
from diffmorph.io.images import regular_file

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PILLOW_ANIMATIONS = (".gif", ".webp", ".png", ".apng")


@dataclass(frozen=True)
class FrameSource:
    """An animation on disk, read one frame at a time.

    Attributes:
        path: a video file, an animated GIF/WebP/PNG, or a folder of images (read in name order).
        count: the number of frames.
    """

    path: Path
    count: int
    kind: str  # "folder", "pillow" or "video"

    def frames(self) -> Iterator[np.ndarray]:
        """Yield ``(H, W, 3)`` uint8 RGB frames in order."""
        if self.kind == "folder":
            for file in _frame_files(self.path):
                with Image.open(file) as image:
                    yield np.asarray(image.convert("RGB"))
        elif self.kind == "pillow":
            with Image.open(self.path) as image:
                for frame in ImageSequence.Iterator(image):
                    yield np.asarray(frame.convert("RGB"))
        else:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def open_frames(path: str | Path) -> FrameSource:
    """Open an animation for reading.

    Raises:
        InputImageError: missing, empty, or not a video, animated image or folder of images.
    """
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"{path}: no such file or folder")
    if not path.is_dir():
        regular_file(path, str(path))
    if path.is_dir():
        count = len(_frame_files(path))
        if count == 0:
            raise InputImageError(f"{path}: the folder holds no image files ({', '.join(FRAME_SUFFIXES)})")
        return FrameSource(path, count, "folder")
    if path.suffix.lower() in PILLOW_ANIMATIONS:
        try:
            with Image.open(path) as image:
                return FrameSource(path, getattr(image, "n_frames", 1), "pillow")
        except (UnidentifiedImageError, OSError):
            pass  # not something Pillow reads: try it as a video
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputImageError(f"{path}: the file has no video stream")
            count = sum(1 for packet in container.demux(video=0) if packet.size)
    except av.error.FFmpegError as exc:
        raise InputImageError(f"{path}: not a video, animated image or folder of frames ({exc.strerror})") from None
    if count == 0:
        raise InputImageError(f"{path}: the video holds no frames")
    return FrameSource(path, count, "video")
