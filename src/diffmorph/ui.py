"""The web UI: ``diffmorph ui`` serves a page to morph images, re-render them without refitting and download
every output; :func:`build_app` returns the Gradio Blocks for embedding.

Each browser session (or ``gradio_client.Client``) gets its own folder (:mod:`diffmorph.visitors`), removed
when the session closes or after long idle. One job runs at a time (the queue shows each waiting job its place),
so two users cannot exhaust the machine, and Cancel stops a job at its next fit step or frame and removes what it
had written. Nothing a request names is used as a path: uploads are files Gradio itself stored, and outputs are
written only inside the session's folder.
"""

import contextlib
import shutil
import sys
import time
import traceback
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from diffmorph.allocator import share_heaps
from diffmorph.config import ZERO_MEANS_NATIVE, MorphConfig
from diffmorph.errors import DiffmorphError, InputImageError
from diffmorph.options import DEFAULTS, FIELDS
from diffmorph.start.points import parse_points
from diffmorph.visitors import (
    Sessions,
    UiLimits,
    check_mask,
    check_uploads,
    gradio_files,
    moved,
    pinned_pictures,
    safe_name,
)

__all__ = ["UiLimits", "build_app", "gradio_files", "serve"]

LABELS = {"frames": "Frames per segment", "fps": "Frames per second", "mode": "Mode", "pacing": "Pacing",
          "align": "Start (align)", "ease": "Ease", "steps": "Fit steps", "size": "Working size", "hold": "Hold (s)",
          "width": "Width (0: native)", "seed": "Seed"}  # the page's short names of the settings it shows
PAGE_FORMATS = ("mp4", "gif")  # the page shows the video and the GIF
RERENDER_SETTINGS = ("frames", "fps", "ease", "hold", "width", "mode", "pacing")  # the re-render's widgets, in order


def widget(name: str, *, blank: bool = False, **extra: object) -> gr.components.Component:
    """The page's widget of the setting ``name``, made from its declaration in
    :class:`~diffmorph.config.MorphConfig`: its choices, its bounds and its default (none when ``blank``: the
    morph's own)."""
    item = FIELDS[name]
    value = None if blank else getattr(DEFAULTS, name)
    common = {"label": LABELS[name], **extra}
    if item.metadata["choices"]:
        return gr.Dropdown(list(item.metadata["choices"]), value=value, **common)
    least, most = item.metadata["bounds"]
    return gr.Number(value, precision=0 if item.type == "int" else None, **common,
                     minimum=0 if name in ZERO_MEANS_NATIVE else least, maximum=most if most < 2**53 else None)


def build_app(limits: UiLimits = UiLimits(), device: str = "auto", verbose: bool = False):
    """The Gradio Blocks of the page, its API endpoints ``/morph``, ``/rerender`` and ``/maps_settings`` (an
    uploaded maps file's own timing, for the re-render's widgets) included.

    Args:
        limits: what one request may ask.
        device: where to fit and render (``--device``).
        verbose: a visitor's error is one line in the server's log; with ``verbose``, its traceback too.
    """
    from diffmorph.export import export
    from diffmorph.pipeline import MorphResult, morph
    from diffmorph.plan import Plan, make_plan

    sessions = Sessions(limits)
    defaults = DEFAULTS

    def run(session: str, result: MorphResult, plan: Plan, progress: gr.Progress, check: Callable[[], None]
            ) -> tuple:
        """Export ``result`` as ``plan`` says into a new folder of the session; the page's outputs. ``check``
        raises once the job is cancelled."""
        folder = sessions.folder(session)
        out = folder / f"run-{time.time_ns()}"

        def on_frame(done: int) -> None:
            check()
            progress((done, plan.frames), desc="rendering", unit="frames")

        report = export(result, out, plan=plan, on_frame=on_frame)
        archive = folder / f"{out.name}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    bundle.write(path, path.relative_to(out))
        for earlier in folder.glob("run-*"):  # the page shows the last run only: a session keeps one
            if earlier.is_dir() and earlier != out:
                shutil.rmtree(earlier)
            elif earlier.is_file() and earlier != archive:
                earlier.unlink()
        sessions.results[safe_name(session)] = result
        fidelity = ", ".join(f"A→B {f['a_to_b_psnr']:.1f} dB, B→A {f['b_to_a_psnr']:.1f} dB" for f in report.fidelity)
        starts = [segment.describe_start() for segment in result.segments]
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
                     pacing: str = defaults.pacing, mask_a: str | None = None, mask_b: str | None = None,
                     mask_mode: str = "keep", points: str = "", request: gr.Request = None,
                     progress: gr.Progress = gr.Progress()) -> tuple:
        """Fit and render a morph of the uploaded images, in order; for a pair, optionally guided by a mask of
        either image (white: the region; ``mask_mode`` keep or subject) and by point pairs (``points``:
        ``ax,ay,bx,by`` a line, in each image's pixels)."""
        session = request.session_hash if request else "anonymous"
        try:
            with sessions.job(session) as check:
                files = check_uploads(images, limits)
                config = MorphConfig(frames=int(frames), fps=float(fps), mode=mode, align=align, steps=int(steps),
                                     size=int(size), ease=ease, hold=float(hold), width=int(width), seed=int(seed),
                                     pacing=pacing, device=device)
                plan = make_plan(config, len(files), loop=loop, formats=PAGE_FORMATS)
                masks = None
                hints = parse_points(points.splitlines(), "the point pairs") if (points or "").strip() else None
                if (mask_a or mask_b or hints is not None) and len(files) != 2:
                    raise InputImageError("masks and points guide a pair: upload two images, or remove them")
                if mask_a or mask_b:
                    masks = [check_mask(path, name, limits) for path, name in ((mask_a, "A"), (mask_b, "B"))]

                def on_step(done: int, loss: float) -> None:
                    check()
                    progress((done, plan.fit_steps), desc="fitting", unit="steps")

                result = morph(files, plan=plan, progress=on_step, max_pixels=limits.max_pixels, masks=masks,
                               mask_mode=mask_mode, points=hints)
                return run(session, result, plan, progress, check)
        except (DiffmorphError, MemoryError) as error:
            raise failing(error, [*(images or []), *(path for path in (mask_a, mask_b) if path)]) from None

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
                elif safe_name(session) in sessions.results:
                    result = sessions.results[safe_name(session)]
                else:
                    raise InputImageError("morph some images first, or upload a maps file to re-render")
                given = {"frames": frames, "fps": fps, "ease": ease, "hold": hold, "width": width, "mode": mode,
                         "pacing": pacing}
                kinds = {"frames": int, "width": int, "fps": float, "hold": float}
                settings = {name: kinds.get(name, str)(value) for name, value in given.items() if value is not None}
                plan = result.plan(settings, formats=PAGE_FORMATS, pingpong=pingpong, device=device)
                return run(session, result, plan, progress, check)
        except (DiffmorphError, MemoryError) as error:
            raise failing(error, maps_file) from None

    def rerender_widgets(config: MorphConfig | None) -> tuple:
        """The re-render's widgets set to ``config``'s timing, size and mode (left as they are for None)."""
        if config is None:
            return tuple(gr.update() for _ in RERENDER_SETTINGS)
        return tuple(getattr(config, name) for name in RERENDER_SETTINGS)

    def file_settings(maps_file: str | None) -> tuple:
        """The timing, size and mode an uploaded maps file was rendered with, for the re-render's widgets: a
        re-render starts from the morph's own (its fps, not the page's default)."""
        if not maps_file:
            return rerender_widgets(None)
        try:
            return rerender_widgets(MorphResult.load(maps_file).config)
        except (DiffmorphError, MemoryError) as error:
            raise failing(error, maps_file) from None

    def own_settings(request: gr.Request) -> tuple:
        """The re-render's widgets set to the morph just made: what a re-render starts from."""
        result = sessions.results.get(safe_name(request.session_hash))
        return rerender_widgets(result.config if result is not None else None)

    def picked_on_a(files: list[str] | None, text: str, event: gr.SelectData) -> tuple:
        """A point clicked on A: it waits, drawn, for its partner on B."""
        pending = [float(event.index[0]), float(event.index[1])]
        return (pending, *pinned_pictures(files, text, pending, limits.max_pixels))

    def picked_on_b(text: str, pending: list[float] | None, event: gr.SelectData) -> tuple:
        """A point clicked on B: the partner of the one waiting on A, a new line of the point pairs."""
        if pending is None:
            gr.Info("Click a point on A first, then its partner on B.")
            return text, None
        line = ",".join(f"{value:g}" for value in (*pending, event.index[0], event.index[1]))
        return (f"{text.rstrip()}\n{line}" if text.strip() else line), None

    def uploaded(files: list[str] | None) -> tuple:
        """New uploads, or new order: thumbnails in order; no point pairs yet; the first two shown to pick points
        on and to paint masks over."""
        first_two = [*(files or [])[:2], None, None][:2]
        return (files or [], "", None, *pinned_pictures(files, "", None, limits.max_pixels), *first_two)

    def clicked(event: gr.SelectData) -> int:
        return event.index

    def painted(draw_a: dict | None, draw_b: dict | None, mask_a: str | None, mask_b: str | None,
                request: gr.Request) -> tuple:
        """The masks to morph with: each image's uploaded mask, or what the visitor painted over it (white:
        painted) as a mask file in their folder, or None."""
        return tuple(_painted(drawn, given, request, name)
                     for drawn, given, name in ((draw_a, mask_a, "a"), (draw_b, mask_b, "b")))

    def _painted(drawn: dict | None, given: str | None, request: gr.Request, name: str) -> str | None:
        ours = f"painted-mask-{name}.png"
        if given and Path(given).name != ours:
            return given  # an upload: the visitor's own mask (a painted one, served back, bears our name)
        layers = (drawn or {}).get("layers") or []
        paint = [layer[..., 3] > 0 for layer in layers if layer is not None and layer.ndim == 3 and layer.shape[2] == 4]
        if not paint or not any(layer.any() for layer in paint):
            return None
        path = sessions.folder(request.session_hash) / ours
        Image.fromarray((np.logical_or.reduce(paint) * 255).astype(np.uint8)).save(path)
        return str(path)

    def cancel(request: gr.Request) -> None:
        """Stop this session's running job at its next fit step or frame."""
        sessions.flag(request.session_hash).set()

    def closed(request: gr.Request) -> None:
        sessions.close(request.session_hash)

    # The files Gradio keeps for the page in its cache (the uploads; the outputs are served from the sessions'
    # folders inside it) are deleted an hour old, checked every minute, and all of them when the server stops.
    with gr.Blocks(title="diffmorph", delete_cache=(60, int(limits.session_seconds))) as app:
        gr.Markdown("# diffmorph\nMorph two or more images into each other: no landmarks, no prompts, no "
                    "pretrained weights. Upload the images in order, then **Morph**.")
        with gr.Row():
            with gr.Column():
                images = gr.File(label="Images, in order (two or more)", file_count="multiple",
                                 file_types=["image"], type="filepath", elem_id="images")
                thumbs = gr.Gallery(label="The images, in order: click one to move it", columns=6, height=130,
                                    allow_preview=False, elem_id="thumbs")
                with gr.Row():
                    earlier = gr.Button("Move earlier", size="sm", elem_id="earlier")
                    later = gr.Button("Move later", size="sm", elem_id="later")
                    chosen = gr.State(None)  # the thumbnail clicked last
                with gr.Row():
                    frames, fps = widget("frames", elem_id="frames"), widget("fps", elem_id="fps")
                    loop = gr.Checkbox(False, label="Loop back to the first image")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        mode, pacing, align, ease = (widget(name) for name in ("mode", "pacing", "align", "ease"))
                    with gr.Row():
                        steps, size = widget("steps", elem_id="steps"), widget("size", elem_id="size")
                        hold, width, seed = (widget(name) for name in ("hold", "width", "seed"))
                with gr.Accordion("Masks (a pair of images)", open=False):
                    gr.Markdown("Paint a region white on A or B (or upload a mask: white on black, the image's "
                                "size); an image without a mask takes the other's.")
                    with gr.Row():
                        brush = gr.Brush(colors=["#ffffff"], color_mode="fixed")
                        draw_a = gr.ImageEditor(label="Paint on A", type="numpy", sources=(), layers=False,
                                                transforms=(), brush=brush, elem_id="draw_a")
                        draw_b = gr.ImageEditor(label="Paint on B", type="numpy", sources=(), layers=False,
                                                transforms=(), brush=brush, elem_id="draw_b")
                    with gr.Row():
                        mask_a = gr.File(label="Mask of A", file_types=["image"], type="filepath", elem_id="mask_a")
                        mask_b = gr.File(label="Mask of B", file_types=["image"], type="filepath", elem_id="mask_b")
                        mask_mode = gr.Dropdown(["keep", "subject"], value="keep", label="The masked region",
                                                info="keep: stays still and crossfades; subject: corresponds, "
                                                     "the rest crossfades")
                with gr.Accordion("Point pairs (a pair of images)", open=False):
                    gr.Markdown("Click a point on A, then its partner on B: the morph carries one onto the other.")
                    with gr.Row():
                        pick_a = gr.Image(label="A", interactive=False, elem_id="pick_a")
                        pick_b = gr.Image(label="B", interactive=False, elem_id="pick_b")
                    points = gr.Textbox("", label="Point pairs: ax,ay,bx,by a line, in each image's pixels", lines=2,
                                        elem_id="points")
                    with gr.Row():
                        unpin = gr.Button("Remove the last pair", size="sm", elem_id="unpin")
                        clear = gr.Button("Remove all", size="sm")
                    waiting = gr.State(None)  # a point clicked on A, waiting for its partner on B
                with gr.Accordion("Re-render settings", open=False):
                    gr.Markdown("A new video from the same maps, no refit. A blank setting keeps the morph's own.")
                    with gr.Row():
                        again = {name: widget(name, blank=True, elem_id=f"rerender_{name}")
                                 for name in RERENDER_SETTINGS[:4]}
                    with gr.Row():
                        again |= {name: widget(name, blank=True, elem_id=f"rerender_{name}")
                                  for name in RERENDER_SETTINGS[4:]}
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
        # A painted mask is read when Morph is pressed (an editor sends its strokes with the event that reads it),
        # kept as the mask file beside an uploaded one, then the morph runs.
        morphing = morph_button.click(painted, [draw_a, draw_b, mask_a, mask_b], [mask_a, mask_b],
                                      api_visibility="private", queue=False).then(
            morph_images, [images, frames, fps, loop, mode, align, steps, size, ease, hold, width, seed, pacing,
                           mask_a, mask_b, mask_mode, points], outputs, api_name="morph")
        pictures = [pick_a, pick_b]
        shown = {"outputs": pictures, "api_visibility": "private", "queue": False}
        images.change(uploaded, [images], [thumbs, points, waiting, *pictures, draw_a, draw_b],
                      api_visibility="private", queue=False)
        thumbs.select(clicked, None, [chosen], api_visibility="private", queue=False)
        private = {"api_visibility": "private", "queue": False}
        earlier.click(lambda files, index: moved(files, index, -1), [images, chosen], [images, chosen], **private)
        later.click(lambda files, index: moved(files, index, 1), [images, chosen], [images, chosen], **private)
        points.change(lambda files, text, pending: pinned_pictures(files, text, pending, limits.max_pixels),
                      [images, points, waiting], **shown)
        pick_a.select(picked_on_a, [images, points], [waiting, *pictures], api_visibility="private", queue=False)
        pick_b.select(picked_on_b, [points, waiting], [points, waiting], api_visibility="private", queue=False)
        unpin.click(lambda text: "\n".join(text.strip().splitlines()[:-1]), [points], [points],
                    api_visibility="private", queue=False)
        clear.click(lambda: "", None, [points], api_visibility="private", queue=False)
        morphing.success(own_settings, None, rerendered, api_visibility="private")
        rendering = rerender_button.click(rerender, [maps_file, *rerendered, pingpong], outputs, api_name="rerender")
        cancel_button.click(cancel, None, None, cancels=[morphing, rendering], queue=False, api_name="cancel")
        maps_file.upload(file_settings, [maps_file], rerendered, api_name="maps_settings")
        gr.Examples(examples=[_demo_files(sessions.root / ".demo")], inputs=[images], label="The built-in demo pair")
        app.unload(closed)
    app.queue(default_concurrency_limit=1, max_size=limits.queue)
    app.sessions = sessions  # for tests and embedders: where each session's files live
    return app


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
    share_heaps()  # Gradio runs the jobs on whichever of its threads is free: without it, memory climbed job by job
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
