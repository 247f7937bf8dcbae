"""What the page keeps for its visitors: each session's folder, result and job, and the limits on them.

Each browser session (or ``gradio_client.Client``) gets its own folder under one temporary root inside Gradio's
cache (so Gradio serves the outputs where they are written); it is removed when the session closes, and any
folder idle for longer than :attr:`UiLimits.session_seconds`, or the longest idle past
:attr:`UiLimits.disk_bytes`, is removed at the next job. A job runs inside :meth:`Sessions.job`, whose check stops
it however it ended early (see docs/method.md, "The page as a service").
"""

import contextlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image, ImageDraw, ImageFont, ImageOps

from diffmorph.allocator import release_freed_memory
from diffmorph.config import DEFAULT_MAX_PIXELS
from diffmorph.errors import ConfigError, DiffmorphError, InputImageError
from diffmorph.io.images import regular_file
from diffmorph.start.points import parse_points


@dataclass(frozen=True)
class UiLimits:
    """What one request may ask of the server."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # per image, as the CLI's --max-pixels
    max_bytes: int = 50 * 2**20  # per uploaded file: a large JPEG, far from a disk-filling upload
    max_images: int = 12  # per morph: a chain of 11 segments
    session_seconds: float = 3600.0  # an idle session's folder is removed after this long
    queue: int = 20  # jobs waiting at most; later ones are told the server is busy
    disk_bytes: int = 4 * 2**30  # all sessions' folders together; past it the longest idle are removed first


class Cancelled(DiffmorphError):
    """The user pressed Cancel."""


class Sessions:
    """Each session's folder, last result and cancel flag, and the sessions whose job is computing."""

    def __init__(self, limits: UiLimits):
        self.limits = limits
        # Inside Gradio's own cache, Gradio serves the outputs where they are written, instead of keeping a copy
        # of each in its cache until its next sweep: a session's files then go with its folder.
        cache = Path(get_upload_folder())
        cache.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="diffmorph-ui-", dir=cache))
        self.results: dict[str, Any] = {}
        self.cancelled: dict[str, threading.Event] = {}
        self.running: set[str] = set()
        self.lock = threading.Lock()

    @contextmanager
    def job(self, session: str) -> Iterator[Callable[[], None]]:
        """A job of ``session`` runs inside: yields the check its fit steps and frames call, which raises
        :class:`Cancelled` once the job is no longer wanted (Cancel pressed, the tab closed, or the client
        cancelled or left: Gradio then ends the event, but not the thread computing it)."""
        flag = self.flag(session)
        flag.clear()
        wanted = _event_running()

        def check() -> None:
            if flag.is_set() or not wanted():
                raise Cancelled("cancelled")

        name = safe_name(session)
        with self.lock:
            self.running.add(name)
        try:
            yield check
        finally:
            with self.lock:
                self.running.discard(name)
            release_freed_memory()

    def folder(self, session: str) -> Path:
        """The session's folder, created if missing; other sessions idle too long are removed first."""
        self.sweep()
        path = self.root / safe_name(session)
        path.mkdir(exist_ok=True)
        path.touch()  # its time is the session's last activity
        return path

    def flag(self, session: str) -> threading.Event:
        with self.lock:
            return self.cancelled.setdefault(safe_name(session), threading.Event())

    def sweep(self) -> None:
        """Remove the sessions idle too long, then, while all sessions' files together are over the limit, the
        longest idle; never one whose job is computing."""
        cutoff = time.time() - self.limits.session_seconds
        folders = []  # (last activity, folder), the longest idle first
        for path in self.root.iterdir():
            if path.name.startswith("."):  # the demo pair's folder, not a session's
                continue
            with contextlib.suppress(OSError):  # a folder another thread removed meanwhile
                folders.append((path.stat().st_mtime, path))
        folders.sort()
        sizes = {path: _bytes(path) for _, path in folders}
        total = sum(sizes.values())
        for mtime, path in folders:
            if path.name not in self.running and (mtime < cutoff or total > self.limits.disk_bytes):
                self.close(path.name)
                total -= sizes[path]

    def remove_all(self) -> None:
        """Remove every session's files and the root they live under: the server stops."""
        shutil.rmtree(self.root, ignore_errors=True)

    def close(self, session: str) -> None:
        """Stop the session's job, remove its files and forget its result."""
        name = safe_name(session)
        with self.lock:
            self.results.pop(name, None)
            flag = self.cancelled.pop(name, None)
        if flag is not None:
            flag.set()
        shutil.rmtree(self.root / name, ignore_errors=True)


def _event_running() -> Callable[[], bool]:
    """Whether the Gradio event this thread computes for is still running, for a check from that thread.

    A client's cancel (``gradio_client``'s ``Job.cancel``) or a lost connection cancels the event's task in
    Gradio's queue, which then takes the next job; the thread computing the cancelled one is not told. Gradio's
    queue lists the events it runs (``active_jobs``); where this Gradio keeps them otherwise, the check always
    says yes, and Cancel and a closed tab still stop the job.
    """
    try:
        from gradio.context import LocalContext

        blocks, event = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        queue = blocks._queue if blocks is not None else None
        queue.active_jobs  # noqa: B018 - present in the Gradio this was built with
    except (ImportError, AttributeError):
        return lambda: True
    if event is None:
        return lambda: True
    return lambda: any(item._id == event for job in queue.active_jobs if job for item in job)


def _bytes(folder: Path) -> int:
    """The size of the files under ``folder``; 0 where another thread removed it meanwhile."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size if path.is_file() else 0
    return total


def safe_name(session: str) -> str:
    """A session id as a folder name: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", session or "anonymous")[:64] or "anonymous"


def check_uploads(paths: list[str] | None, limits: UiLimits) -> list[Path]:
    """The uploaded files, checked for count and size before anything is decoded.

    Raises:
        InputImageError: fewer than two, more than ``limits.max_images``, not a regular file, or too large.
    """
    files = [Path(path) for path in paths or []]
    if len(files) < 2:
        raise InputImageError(f"upload at least two images to morph (got {len(files)})")
    if len(files) > limits.max_images:
        raise InputImageError(f"upload at most {limits.max_images} images (got {len(files)})")
    for number, path in enumerate(files, start=1):
        regular_file(path, f"image {number}", InputImageError, limits.max_bytes)
    return files


def check_mask(path: str | None, name: str, limits: UiLimits) -> Path | None:
    """An uploaded mask of image ``name``, checked as an image upload is; None where there is none."""
    if not path:
        return None
    regular_file(Path(path), f"the mask of {name}", InputImageError, limits.max_bytes)
    return Path(path)


def moved(files: list[str] | None, index: int | None, step: int) -> tuple[list[str], int | None]:
    """The uploads with the one at ``index`` moved ``step`` places, and where it is now (unchanged at an end).

    >>> moved(["a", "b", "c"], 2, -1)
    (['a', 'c', 'b'], 1)
    """
    files = list(files or [])
    if index is None or not 0 <= index < len(files) or not 0 <= index + step < len(files):
        return files, index
    files.insert(index + step, files.pop(index))
    return files, index + step


def pinned_pictures(files: list[str] | None, text: str | None, pending: list[float] | None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The first two uploads with the point pairs of ``text`` (``ax,ay,bx,by`` a line) drawn on them, numbered,
    and a point of A that waits for its partner (``pending``) drawn too; None where there is no such upload. Lines
    that are not four numbers are left out: the morph names them."""
    pairs = []
    for line in (text or "").splitlines():
        with contextlib.suppress(ConfigError):  # a line being typed, or a wrong one: the morph names it
            pairs.extend(parse_points([line], "").tolist())
    pictures = []
    for side, path in enumerate((files or [])[:2]):
        try:
            with Image.open(path) as opened:
                if opened.width * opened.height > max_pixels:
                    raise ValueError("too large to show")
                picture = ImageOps.exif_transpose(opened).convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError):
            pictures.append(None)
            continue
        draw = ImageDraw.Draw(picture)
        radius = max(4, round(max(picture.size) / 80))
        marks = [(number, values[2 * side], values[2 * side + 1]) for number, values in enumerate(pairs, start=1)]
        if pending and side == 0:
            marks.append(("?", *pending))
        for label, x, y in marks:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 0), width=2)
            draw.text((x + radius + 2, y - radius - 2), str(label), fill=(255, 255, 0),
                      font=ImageFont.load_default(size=max(12, 3 * radius)))
        pictures.append(np.asarray(picture))
    pictures += [None] * (2 - len(pictures))
    return pictures[0], pictures[1]


def gradio_files(app: gr.Blocks) -> set[Path]:
    """The files Gradio keeps for the page in its cache: every upload and output it was given, and its copies of
    the demo pair."""
    files = {Path(path) for group in getattr(app, "temp_file_sets", ()) for path in group}
    files |= {Path(path) for block in app.blocks.values() for path in getattr(block, "keep_in_cache", ())}
    cache = Path(app.GRADIO_CACHE).resolve()
    return {path for path in files if path.resolve().is_relative_to(cache)}
