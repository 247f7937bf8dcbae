"""Streaming writers for animations: frames go in one at a time, so memory does not grow with length.

Each writer takes ``(H, W, 3)`` uint8 frames through :meth:`add` and finishes with :meth:`close`.
Writers only write to the path they are given; the caller names it (a temporary name, see
:mod:`diffmorph.io.outputs`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import GifImagePlugin, Image


class FrameWriter(Protocol):
    def add(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class EncoderWriter:
    """Frames through one of FFmpeg's encoders into a container file, via PyAV, one at a time.

    Args:
        container_format, container_options: the muxer and its options.
        codec, codec_options: the encoder and its options; frames are given to it as ``pix_fmt``.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, *, container_format: str,
                 container_options: dict[str, str], codec: str, codec_options: dict[str, str],
                 pix_fmt: str = "yuv420p"):
        self.width, self.height = width, height
        self._container = av.open(str(path), mode="w", format=container_format, options=container_options)
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = pix_fmt
        self._stream.options = codec_options
        self._count = 0

    def _picture(self, frame: np.ndarray) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")

    def add(self, frame: np.ndarray) -> None:
        picture = self._picture(frame)
        picture.pts = self._count
        self._count += 1
        for packet in self._stream.encode(picture):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


class Mp4Writer(EncoderWriter):
    """H.264 in MP4, yuv420p, BT.709 tagged, ``+faststart``: plays in every browser.

    At CRF 18 the decoded frames of a 1024 x 1024 morph differ from the rendered ones by 1.3 grey
    levels on average. x264's "veryfast" preset encodes such frames in 17 ms each on 2 CPU cores
    ("fast" took twice as long in our measurement, "ultrafast" 7 ms but with files 2.3x larger).

    yuv420p stores colour at half resolution, so H.264 needs even sizes: an odd width or height
    drops the last column or row (see :func:`even_size`).
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, *, crf: int = 18, preset: str = "veryfast"):
        even_width, even_height = even_size(width, height)
        super().__init__(path, even_width, even_height, fps, container_format="mp4",
                         container_options={"movflags": "+faststart"}, codec="libx264",
                         codec_options={"crf": str(crf), "preset": preset})
        codec = self._stream.codec_context
        codec.colorspace = codec.color_primaries = codec.color_trc = 1  # BT.709
        codec.color_range = 1  # limited ("TV") range, what players assume for H.264

    def _picture(self, frame: np.ndarray) -> av.VideoFrame:
        picture = super()._picture(frame[:self.height, :self.width])
        return picture.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")


def even_size(width: int, height: int) -> tuple[int, int]:
    """The largest even size that fits: what yuv420p video can hold.

    >>> even_size(513, 512)
    (512, 512)
    """
    return width - width % 2, height - height % 2


def gif_delay_ms(fps: float) -> int:
    """A GIF frame's delay for ``fps``: whole centiseconds, at least 2.

    GIF stores delays in centiseconds, and browsers slow delays under 2 cs down to 10 cs, so GIFs play
    at most at 50 frames/s.

    >>> gif_delay_ms(45), gif_delay_ms(24), gif_delay_ms(100)
    (20, 40, 20)
    """
    return max(20, round(100.0 / fps) * 10)


class GifWriter:
    """Looping animated GIF, written frame by frame: memory does not grow with the frame count.

    Without a ``palette``, each frame gets its own 256 colours from Pillow's fast octree (7 ms for a
    1024 x 1024 frame against 50-180 ms for median cut): a morph's colours drift from frame to frame, and
    a palette fitted to each frame follows them, so gradients keep their colours and their bands do not
    move (docs/benchmarks.md); with ``smooth``, by median cut (:func:`smooth_palette`), whose finer steps do not
    band a glow, for a file about twice the size. With a ``palette`` (see :func:`clip_palette`) every frame is
    mapped to it and the file stores a single colour table. Pillow's own animated-GIF writer keeps every frame until it
    finishes; this writer uses its per-frame encoder.
    """

    def __init__(self, path: Path, fps: float, *, max_width: int = 0, palette: Image.Image | None = None,
                 smooth: bool = False):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._delay = gif_delay_ms(fps)
        self._max_width = max_width
        self._palette = palette
        self._smooth = smooth
        self._started = False

    def add(self, frame: np.ndarray) -> None:
        if 0 < self._max_width < frame.shape[1]:  # each small pixel the mean of those it covers
            import cv2  # here, not at the top: the CLI's start-up (--help, --version) imports this module

            height = max(1, round(frame.shape[0] * self._max_width / frame.shape[1]))
            frame = cv2.resize(frame, (self._max_width, height), interpolation=cv2.INTER_AREA)
        image = Image.fromarray(frame)
        if self._palette is None and self._smooth:
            image = image.quantize(palette=smooth_palette(image), dither=Image.Dither.NONE)
        elif self._palette is None:
            image = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        else:
            # No dithering: a dither pattern that changes every frame crawls, and compresses badly.
            image = image.quantize(palette=self._palette, dither=Image.Dither.NONE)
        if not self._started:
            header, _ = GifImagePlugin.getheader(image, info={"loop": 0})
            self._file.writelines(header)
            self._started = True
        # The header holds the first frame's palette as the global colour table; frames with the same
        # palette need no table of their own.
        local_table = self._palette is None
        self._file.writelines(GifImagePlugin.getdata(image, duration=self._delay, include_color_table=local_table))

    def close(self) -> None:
        if not self._file.closed:
            self._file.write(b";")  # GIF trailer
            self._file.close()


def smooth_palette(image: Image.Image, step: int = 4) -> Image.Image:
    """256 colours fitted to one frame by median cut, which splits the colours where they spread most and so keeps
    a gradient's steps finer than the octree's (whose colours sit on a grid of 16 levels a channel). Fitted to a
    copy ``step`` times smaller each way (averaged, so a gradient keeps every level), at a quarter of the octree's
    cost per pixel of the copy; the frame is then mapped to it."""
    small = image.resize((max(1, image.width // step), max(1, image.height // step)), Image.Resampling.BOX)
    return small.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


MIXTURES = tuple(k / 8 for k in range(1, 8))  # crossfades the clip palette covers: its gradients' steps between images


def clip_palette(keyframes: Sequence[np.ndarray], side: int = 192) -> Image.Image:
    """One 256-colour palette for a whole morph, from its keyframes.

    A morph's frames hold the colours of the images it passes through and mixtures of consecutive
    ones, so the palette is fitted (Pillow's octree, which keeps more of a gradient's steps than median
    cut) to small copies of every keyframe and of ``MIXTURES`` crossfades of each consecutive pair.

    Args:
        keyframes: ``(H, W, 3)`` uint8 images of one size, in the order the morph shows them.
        side: longest side of the small copies.

    Returns:
        A "P" image whose palette :meth:`GifWriter` maps frames to.
    """
    height, width = keyframes[0].shape[:2]
    scale = min(1.0, side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = [np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)) for frame in keyframes]
    mixtures = [np.rint(first * (1 - t) + second * t).astype(np.uint8)
                for first, second in pairwise(np.asarray(image, dtype=np.float32) for image in small)
                for t in MIXTURES]
    return Image.fromarray(np.concatenate(small + mixtures, axis=0)).quantize(256, method=Image.Quantize.FASTOCTREE)


class WebpWriter(EncoderWriter):
    """Looping animated WebP through FFmpeg's libwebp encoder and WebP muxer, frame by frame.

    Pillow's animated WebP writer keeps a raw copy of every frame until it finishes (4 MB a frame at
    1024 x 1024); the muxer writes each frame as it is encoded, so memory does not grow with the count.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float, *, quality: int = 90):
        super().__init__(path, width, height, fps, container_format="webp", container_options={"loop": "0"},
                         codec="libwebp", codec_options={"quality": str(quality)})


class BackgroundWriter:
    """Runs another writer on a worker thread, so encoding overlaps rendering.

    PyAV and Pillow release Python's lock while they encode, so the next frame renders meanwhile.
    A bounded queue keeps at most ``depth`` frames in flight: memory does not grow with the count.
    """

    def __init__(self, writer: FrameWriter, depth: int = 4):
        self._writer = writer
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="diffmorph-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (frame := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.add(frame)
                except BaseException as exc:
                    self._error = exc

    def add(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(frame)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._writer.close()
        if self._error is not None:
            raise self._error


class PngFramesWriter:
    """Numbered PNG files ``frame_00000.png`` ... in a folder."""

    def __init__(self, folder: Path):
        self._folder = folder
        self._folder.mkdir()
        self._count = 0

    def add(self, frame: np.ndarray) -> None:
        Image.fromarray(frame).save(self._folder / f"frame_{self._count:05d}.png", compress_level=4)
        self._count += 1

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class WriterOptions:
    """What a writer is opened with, beyond its path: each format takes what applies to it."""

    width: int
    height: int
    fps: float
    gif_width: int = 0  # caps the GIF's width (0: native)
    gif_palette: Image.Image | None = None  # the GIF's palette for every frame (clip_palette); None: each its own
    gif_smooth: bool = False  # each frame's own palette by median cut (smooth_palette), not the octree
    crf: int | None = None  # H.264's quality (None: Mp4Writer's default)


@dataclass(frozen=True)
class Format:
    """One output of the frames, as ``--format`` names it: adding a format is one of these plus its writer.

    Attributes:
        name: its name for ``--format``, the config and the manifest.
        output: the file or folder it writes in the output folder.
        open: opens its writer at a path.
        lossy: whether its encoder changes the pictures (``diffmorph eval`` then measures that change on A and B
            written alone, :func:`~diffmorph.evaluate.codec_losses`).
    """

    name: str
    output: str
    open: Callable[[Path, WriterOptions], FrameWriter]
    lossy: bool


WRITTEN = {format.name: format for format in (
    Format("mp4", "morph.mp4", lossy=True, open=lambda path, o: BackgroundWriter(
        Mp4Writer(path, o.width, o.height, o.fps, **({} if o.crf is None else {"crf": o.crf})))),
    Format("gif", "morph.gif", lossy=True, open=lambda path, o: BackgroundWriter(
        GifWriter(path, o.fps, max_width=o.gif_width, palette=o.gif_palette, smooth=o.gif_smooth))),
    Format("webp", "morph.webp", lossy=True, open=lambda path, o: BackgroundWriter(
        WebpWriter(path, o.width, o.height, o.fps))),
    Format("frames", "frames", lossy=False, open=lambda path, o: PngFramesWriter(path)),
)}
FORMATS = tuple(WRITTEN)  # the formats that write the frames (export adds "flow", which writes the maps)
OUTPUT_NAMES = {format.name: format.output for format in WRITTEN.values()}


def open_writer(kind: str, path: Path, options: WriterOptions) -> FrameWriter:
    """A writer for one of :data:`FORMATS` at ``path``."""
    if kind not in WRITTEN:
        raise ValueError(f"unknown format {kind!r}; choose from {', '.join(FORMATS)}")
    return WRITTEN[kind].open(path, options)
