"""The web UI: ``diffmorph ui`` serves a page to morph images, re-render them without refitting and download
every output; :func:`build_app` returns the Gradio Blocks for embedding.

Each browser session (or ``gradio_client.Client``) gets its own folder under one temporary root; it is removed
when the session closes, and any folder idle for longer than :attr:`UiLimits.session_seconds` is removed at
the next job. One job runs at a time (the queue shows each waiting job its place), so two users cannot
exhaust the machine, and Cancel stops a job at its next fit step or frame and removes what it had written.
Nothing a request names is used as a path: uploads are files Gradio itself stored, and outputs are written
only inside the session's folder.
"""

import contextlib
import contextvars
import functools
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from diffmorph.config import ALIGNS, DEFAULT_MAX_PIXELS, EASES, MODES, PACINGS, MorphConfig
from diffmorph.errors import DiffmorphError, InputImageError
from diffmorph.io.images import regular_file

RERENDER_SETTINGS = ("frames", "fps", "ease", "hold", "width", "mode", "pacing")  # the re-render's widgets, in order


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

        name = _safe(session)
        with self.lock:
            self.running.add(name)
        try:
            yield check
        finally:
            with self.lock:
                self.running.discard(name)

    def folder(self, session: str) -> Path:
        """The session's folder, created if missing; other sessions idle too long are removed first."""
        self.sweep()
        path = self.root / _safe(session)
        path.mkdir(exist_ok=True)
        path.touch()  # its time is the session's last activity
        return path

    def flag(self, session: str) -> threading.Event:
        with self.lock:
            return self.cancelled.setdefault(_safe(session), threading.Event())

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
        name = _safe(session)
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


def _safe(session: str) -> str:
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


def build_app(limits: UiLimits = UiLimits(), device: str = "auto", verbose: bool = False):
    """The Gradio Blocks of the page, its API endpoints ``/morph``, ``/rerender`` and ``/maps_settings`` (an
    uploaded maps file's own timing, for the re-render's widgets) included.

    Args:
        limits: what one request may ask.
        device: where to fit and render (``--device``).
        verbose: a visitor's error is one line in the server's log; with ``verbose``, its traceback too.
    """
    from diffmorph.export import export, frame_count, render_config
    from diffmorph.pipeline import MorphResult, morph

    sessions = Sessions(limits)
    defaults = MorphConfig()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffmorph-job")

    def on_worker(job: Callable) -> Callable:
        """``job`` run on the page's one job thread, whichever of Gradio's threads calls it: a computation on a
        new thread brings PyTorch a new team of OpenMP threads and the allocator a new heap, and the server's
        memory grew with each thread Gradio happened to use."""

        @functools.wraps(job)  # Gradio reads the parameters (the request, the progress) from the signature
        def run(*args, **kwargs):
            return worker.submit(contextvars.copy_context().run, job, *args, **kwargs).result()

        return run

    def run(session: str, result: MorphResult, settings: dict, pingpong: bool, progress: gr.Progress,
            check: Callable[[], None]) -> tuple:
        """Export ``result`` into a new folder of the session; the page's outputs. ``check`` raises once the job
        is cancelled."""
        folder = sessions.folder(session)
        out = folder / f"run-{time.time_ns()}"
        total = frame_count(render_config(result.config, settings), len(result.segments), pingpong)

        def on_frame(done: int) -> None:
            check()
            progress((done, total), desc="rendering", unit="frames")

        report = export(result, out, formats=["mp4", "gif"], pingpong=pingpong, device=device, on_frame=on_frame,
                        **settings)
        archive = folder / f"{out.name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    bundle.write(path, path.relative_to(out))
        for earlier in folder.glob("run-*"):  # the page shows the last run only: a session keeps one
            if earlier not in (out, archive):
                shutil.rmtree(earlier) if earlier.is_dir() else earlier.unlink()
        sessions.results[_safe(session)] = result
        fidelity = ", ".join(f"A→B {f['a_to_b_psnr']:.1f} dB, B→A {f['b_to_a_psnr']:.1f} dB" for f in report.fidelity)
        starts = [segment.describe_start(result.config.align) for segment in result.segments]
        lines = [f"**{report.frames} frames at {report.fps:g} fps**, {result.size[0]} × {result.size[1]}, "
                 f"{len(result.segments)} segment(s)", f"fidelity: {fidelity}"]
        lines += [f"segment {k + 1}: {start or 'started from no warp'}" for k, start in enumerate(starts)]
        seconds = [segment.fit_seconds for segment in result.segments]
        if all(s == s for s in seconds):  # a loaded file from an older version may not know its fit time
            lines.append(f"fit {sum(seconds):.1f} s, render and encode {report.seconds['render_and_encode']:.1f} s")
        return (str(out / "morph.mp4"), str(out / "morph.gif"), str(out / "contact_sheet.png"), "\n\n".join(lines),
                str(out / "maps.safetensors"), str(archive))

    def failing(error: Exception, uploads: list[str] | str | None = None) -> gr.Error:
        """The error's one line for the visitor, each uploaded file named as they named it, not by the path the
        server keeps it at (Gradio keeps an upload under its own name in a folder of its own)."""
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        for path in [uploads] if isinstance(uploads, str) else uploads or []:
            message = message.replace(str(path), Path(path).name)
        # One line in the server's log per visitor's error; the whole traceback only when asked for.
        if verbose:
            traceback.print_exception(error)
        print(f"diffmorph ui: {message}", file=sys.stderr, flush=True)
        return gr.Error(message, print_exception=False)

    def morph_images(images: list[str] | None, frames: float = defaults.frames, fps: float = defaults.fps,
                     loop: bool = False, mode: str = defaults.mode, align: str = defaults.align,
                     steps: float = defaults.steps, size: float = defaults.size, ease: str = defaults.ease,
                     hold: float = defaults.hold, width: float = defaults.width, seed: float = defaults.seed,
                     pacing: str = defaults.pacing, request: gr.Request = None,
                     progress: gr.Progress = gr.Progress()) -> tuple:
        """Fit and render a morph of the uploaded images, in order."""
        session = request.session_hash if request else "anonymous"
        try:
            with sessions.job(session) as check:
                files = check_uploads(images, limits)
                config = MorphConfig(frames=int(frames), fps=float(fps), mode=mode, align=align, steps=int(steps),
                                     size=int(size), ease=ease, hold=float(hold), width=int(width), seed=int(seed),
                                     pacing=pacing, device=device).validate()
                total = (config.steps + config.refine) * (len(files) - 1 + loop)

                def on_step(done: int, loss: float) -> None:
                    check()
                    progress((done, total), desc="fitting", unit="steps")

                result = morph(files, config, loop=loop, progress=on_step, max_pixels=limits.max_pixels)
                return run(session, result, {}, False, progress, check)
        except (DiffmorphError, MemoryError) as error:
            raise failing(error, images) from None

    def rerender(maps_file: str | None = None, frames: float | None = None, fps: float | None = None,
                 ease: str | None = None, hold: float | None = None, width: float | None = None,
                 mode: str | None = None, pacing: str | None = None, pingpong: bool = False,
                 request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> tuple:
        """Render the last morph (or an uploaded maps file) again with new timing, size or mode; no refit.
        Settings left out keep the morph's own."""
        session = request.session_hash if request else "anonymous"
        try:
            with sessions.job(session) as check:
                if maps_file:
                    result = MorphResult.load(maps_file)
                elif _safe(session) in sessions.results:
                    result = sessions.results[_safe(session)]
                else:
                    raise InputImageError("morph some images first, or upload a maps file to re-render")
                given = {"frames": frames, "fps": fps, "ease": ease, "hold": hold, "width": width, "mode": mode,
                         "pacing": pacing}
                kinds = {"frames": int, "width": int, "fps": float, "hold": float}
                settings = {name: kinds.get(name, str)(value) for name, value in given.items() if value is not None}
                return run(session, result, settings, pingpong, progress, check)
        except (DiffmorphError, MemoryError) as error:
            raise failing(error, maps_file) from None

    def file_settings(maps_file: str | None) -> tuple:
        """The timing, size and mode an uploaded maps file was rendered with, for the re-render's widgets: a
        re-render starts from the morph's own (its fps, not the page's default)."""
        if not maps_file:
            return tuple(gr.update() for _ in RERENDER_SETTINGS)
        try:
            config = MorphResult.load(maps_file).config
        except (DiffmorphError, MemoryError) as error:
            raise failing(error, maps_file) from None
        return tuple(getattr(config, name) for name in RERENDER_SETTINGS)

    def own_settings(request: gr.Request) -> tuple:
        """The re-render's widgets set to the morph just made: what a re-render starts from."""
        result = sessions.results.get(_safe(request.session_hash))
        if result is None:
            return tuple(gr.update() for _ in RERENDER_SETTINGS)
        return tuple(getattr(result.config, name) for name in RERENDER_SETTINGS)

    def cancel(request: gr.Request) -> None:
        """Stop this session's running job at its next fit step or frame."""
        sessions.flag(request.session_hash).set()

    def closed(request: gr.Request) -> None:
        sessions.close(request.session_hash)

    # Gradio keeps its own copy of every upload and output in its cache: an idle session's go with its folder,
    # checked every minute, and all of them when the server stops.
    with gr.Blocks(title="diffmorph", delete_cache=(60, int(limits.session_seconds))) as app:
        gr.Markdown("# diffmorph\nMorph two or more images into each other: no landmarks, no prompts, no "
                    "pretrained weights. Upload the images in order, then **Morph**.")
        with gr.Row():
            with gr.Column():
                images = gr.File(label="Images, in order (two or more)", file_count="multiple",
                                 file_types=["image"], type="filepath", elem_id="images")
                with gr.Row():
                    frames = gr.Number(defaults.frames, label="Frames per segment", precision=0, minimum=2,
                                       elem_id="frames")
                    fps = gr.Number(defaults.fps, label="Frames per second", minimum=1, elem_id="fps")
                    loop = gr.Checkbox(False, label="Loop back to the first image")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        mode = gr.Dropdown(list(MODES), value=defaults.mode, label="Mode")
                        pacing = gr.Dropdown(list(PACINGS), value=defaults.pacing, label="Pacing")
                        align = gr.Dropdown(list(ALIGNS), value=defaults.align, label="Start (align)")
                        ease = gr.Dropdown(list(EASES), value=defaults.ease, label="Ease")
                    with gr.Row():
                        steps = gr.Number(defaults.steps, label="Fit steps", precision=0, minimum=1, elem_id="steps")
                        size = gr.Number(defaults.size, label="Working size", precision=0, minimum=8, elem_id="size")
                        hold = gr.Number(defaults.hold, label="Hold (s)", minimum=0)
                        width = gr.Number(defaults.width, label="Width (0: native)", precision=0, minimum=0)
                        seed = gr.Number(defaults.seed, label="Seed", precision=0)
                with gr.Accordion("Re-render settings", open=False):
                    gr.Markdown("A new video from the same maps, no refit. A blank setting keeps the morph's own.")
                    with gr.Row():
                        again = {
                            "frames": gr.Number(None, label="Frames per segment", precision=0, minimum=2,
                                                elem_id="rerender_frames"),
                            "fps": gr.Number(None, label="Frames per second", minimum=1, elem_id="rerender_fps"),
                            "ease": gr.Dropdown(list(EASES), value=None, label="Ease"),
                            "hold": gr.Number(None, label="Hold (s)", minimum=0),
                        }
                    with gr.Row():
                        again |= {
                            "width": gr.Number(None, label="Width (0: native)", precision=0, minimum=0),
                            "mode": gr.Dropdown(list(MODES), value=None, label="Mode"),
                            "pacing": gr.Dropdown(list(PACINGS), value=None, label="Pacing"),
                        }
                        pingpong = gr.Checkbox(False, label="Ping-pong")
                    maps_file = gr.File(label="Maps file to re-render (maps.safetensors)", file_types=[".safetensors"],
                                        type="filepath")
                with gr.Row():
                    morph_button = gr.Button("Morph", variant="primary", elem_id="morph")
                    rerender_button = gr.Button("Re-render", elem_id="rerender")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column():
                video = gr.Video(label="Morph (MP4)", elem_id="video", autoplay=True, loop=True)
                summary = gr.Markdown(label="Summary", elem_id="summary")
                gif = gr.Image(label="GIF", type="filepath")
                sheet = gr.Image(label="Contact sheet", type="filepath")
                with gr.Row():
                    maps_out = gr.File(label="Maps file")
                    bundle = gr.File(label="All outputs (zip)")
        outputs = [video, gif, sheet, summary, maps_out, bundle]
        rerendered = [again[name] for name in RERENDER_SETTINGS]
        morphing = morph_button.click(on_worker(morph_images), [images, frames, fps, loop, mode, align, steps, size,
                                                                ease, hold, width, seed, pacing], outputs,
                                      api_name="morph")
        morphing.success(own_settings, None, rerendered, api_visibility="private")
        rendering = rerender_button.click(on_worker(rerender), [maps_file, *rerendered, pingpong], outputs,
                                          api_name="rerender")
        cancel_button.click(cancel, None, None, cancels=[morphing, rendering], queue=False, api_name="cancel")
        maps_file.upload(file_settings, [maps_file], rerendered, api_name="maps_settings")
        gr.Examples(examples=[_demo_files(sessions.root / ".demo")], inputs=[images], label="The built-in demo pair")
        app.unload(closed)
    app.queue(default_concurrency_limit=1, max_size=limits.queue)
    app.sessions = sessions  # for tests and embedders: where each session's files live
    return app


def gradio_files(app: gr.Blocks) -> set[Path]:
    """The files Gradio keeps for the page in its cache: every upload and output it was given, and its copies of
    the demo pair."""
    files = {Path(path) for group in getattr(app, "temp_file_sets", ()) for path in group}
    files |= {Path(path) for block in app.blocks.values() for path in getattr(block, "keep_in_cache", ())}
    cache = Path(app.GRADIO_CACHE).resolve()
    return {path for path in files if path.resolve().is_relative_to(cache)}


def _demo_files(folder: Path) -> list[list[str]]:
    """The demo pair written once as PNGs into ``folder``, for the page's one-click example."""
    from PIL import Image

    from diffmorph.demo import demo_pair

    folder.mkdir()
    paths = []
    for name, image in zip(("sunset.png", "night.png"), demo_pair(), strict=True):
        Image.fromarray((image * 255).round().astype("uint8")).save(folder / name)
        paths.append(str(folder / name))
    return [paths]


def serve(host: str = "127.0.0.1", port: int = 7860, limits: UiLimits = UiLimits(), device: str = "auto",
          block: bool = True, verbose: bool = False):
    """Start the page and print its URL; with ``block`` serve until interrupted. A visitor's error is one line in
    the server's log (with its traceback where ``verbose``). When the server stops (Ctrl-C, SIGTERM,
    ``app.close()``) the files it made go: the sessions' and Gradio's copies."""
    app = build_app(limits, device, verbose)

    @asynccontextmanager
    async def removing_files(_) -> AsyncIterator[None]:
        yield
        app.sessions.remove_all()
        for path in gradio_files(app):  # Gradio removes its copies too, but keeps the demo pair's
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # its folder, named by the file's hash, where now empty
                path.parent.rmdir()

    app.launch(server_name=host, server_port=port, max_file_size=limits.max_bytes, prevent_thread_lock=not block,
               quiet=True, show_error=True, app_kwargs={"lifespan": removing_files})
    return app
