"""The web page in a real browser: Debian's Chromium driven by Playwright, against the app served here."""

import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from diffmorph.demo import demo_pair

pytest.importorskip("gradio", reason="the web UI's extra is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") != "true":  # in CI a missing browser fails the run instead
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from diffmorph.ui import UiLimits, serve  # noqa: E402

# Chromium as root in a container, with no network: no sandbox, no background connections.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PLAYABLE = """() => {
    const video = document.querySelector('#video video');
    return video !== null && video.readyState === 4 && video.canPlayType('video/mp4; codecs="avc1.42E01E"') !== ''
        ? video.currentSrc : null;
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served_pair(tmp_path: Path, width: int, height: int, more: tuple[Path, ...] = (), **page_options):
    """The page served here, open in Chromium with the demo pair drawn at ``width`` x ``height`` uploaded (and
    the images ``more`` after it): ``(app, page)``."""
    assert CHROMIUM is not None, "Chromium is not installed: apt-get install chromium"
    pictures = []
    for index, image in enumerate(demo_pair(width, height)):
        pictures.append(tmp_path / f"{index}.png")
        Image.fromarray((image * 255).round().astype("uint8")).save(pictures[-1])
    app = serve(port=free_port(), limits=UiLimits(), device="cpu", block=False)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(**page_options)
            page.goto(app.local_url)
            page.locator("#images input[type=file]").set_input_files([str(p) for p in (*pictures, *more)])
            yield app, page
            browser.close()
    finally:
        app.close()


def quick_fit(page, steps: int) -> None:
    """Under *Advanced*, a fit of ``steps`` steps at a 32-pixel working size."""
    page.get_by_text("Advanced").click()
    page.locator("#steps input").fill(str(steps))
    page.locator("#size input").fill("32")


def settled(page) -> None:
    """Wait two animation frames: the page sets a widget from an event's output in more than one step, and a
    value typed between them is overwritten (the re-render's frames went back to 6 in about one run of four)."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def test_morph_and_rerender_in_the_browser(tmp_path):
    with served_pair(tmp_path, 240, 180, viewport={"width": 1280, "height": 1100}) as (_, page):
        page.locator("#frames input").fill("6")
        quick_fit(page, 40)
        page.locator("#morph").click()
        first = page.wait_for_function(PLAYABLE, timeout=120_000).json_value()
        assert "6 frames" in page.locator("#summary").inner_text()

        page.get_by_text("Re-render settings").click()
        # The re-render's widgets start from the morph just made; a blank one would keep its own.
        page.wait_for_function("() => document.querySelector('#rerender_frames input')?.value === '6'",
                               timeout=30_000)
        settled(page)
        page.locator("#rerender_frames input").fill("9")
        page.locator("#rerender_frames input").press("Tab")  # the page takes a typed number when it loses focus
        settled(page)
        assert page.locator("#rerender_frames input").input_value() == "9"
        page.locator("#rerender").click()
        page.wait_for_function(f"() => ({PLAYABLE})() !== null && ({PLAYABLE})() !== {first!r}",
                               timeout=120_000)
        page.wait_for_function("() => document.querySelector('#summary').innerText.includes('9 frames')",
                               timeout=60_000)
        # The README's picture is scripts/ui_screenshot.py's, of a default morph; this one shows the page renders.
        shot = tmp_path / "ui.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000


def test_a_tab_closed_mid_job_stops_the_work(tmp_path):
    with served_pair(tmp_path, 120, 90) as (app, page):
        quick_fit(page, 5000)
        page.locator("#morph").click()
        deadline = time.monotonic() + 60
        while not app.sessions.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.sessions.running, "the morph never started"
        page.close()  # mid-fit: 5000 steps would take minutes
        deadline = time.monotonic() + 5
        while app.sessions.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not app.sessions.running, "the job went on after its tab closed"
        cpu = time.process_time()  # the server runs in this process
        time.sleep(3)
        assert time.process_time() - cpu < 1.0
        made = [path for path in app.sessions.root.rglob("*") if path.is_file() and ".demo" not in path.parts]
        assert made == []  # the visitor's folder went with its tab (the demo pair is the server's)


def test_point_pairs_clicked_on_the_page_reach_the_fit(tmp_path):
    with served_pair(tmp_path, 120, 90) as (_, page):
        page.get_by_text("Point pairs (a pair of images)").click()
        page.locator("#pick_a img").wait_for(timeout=30_000)
        page.locator("#pick_b img").wait_for(timeout=30_000)
        for picked, (x, y) in (("#pick_a", (0.25, 0.5)), ("#pick_b", (0.75, 0.4))):
            image = page.locator(f"{picked} img")
            box = image.bounding_box()
            image.click(position={"x": box["width"] * x, "y": box["height"] * y})
            page.wait_for_timeout(500)
        page.wait_for_function("() => document.querySelector('#points textarea').value.split(',').length === 4",
                               timeout=30_000)
        ax, ay, bx, by = (float(v) for v in page.locator("#points textarea").input_value().split(","))
        assert abs(ax - 30) <= 3 and abs(ay - 45) <= 3 and abs(bx - 90) <= 3 and abs(by - 36) <= 3  # image pixels
        quick_fit(page, 20)
        page.locator("#morph").click()
        page.wait_for_function("() => document.querySelector('#summary').innerText.includes('pinned')",
                               timeout=120_000)
        assert "1 point pair(s) pinned" in page.locator("#summary").inner_text()


def test_a_mask_painted_on_the_page_reaches_the_fit(tmp_path):
    with served_pair(tmp_path, 120, 90) as (_, page):
        quick_fit(page, 20)
        page.get_by_text("Masks (a pair of images)").click()
        canvas = page.locator("#draw_a canvas").last
        canvas.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)  # the editor draws A under the brush
        box = canvas.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 40, y - 20)
        page.mouse.down()
        page.mouse.move(x + 40, y + 20, steps=20)  # a stroke across A's middle
        page.mouse.up()
        page.locator("#morph").click()
        page.wait_for_function("() => document.querySelector('#summary').innerText.includes('masked')",
                               timeout=120_000)
        assert "masked (A's" in page.locator("#summary").inner_text()  # no mask was uploaded: the paint is it


def test_the_uploads_show_in_order_and_move(tmp_path):
    third = tmp_path / "2.png"
    Image.new("RGB", (120, 90), (30, 60, 200)).save(third)
    with served_pair(tmp_path, 120, 90, more=(third,)) as (_, page):
        thumbnails = page.locator("#thumbs img")
        page.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 3", timeout=30_000)
        thumbnails.nth(2).click()
        page.locator("#earlier").click()
        page.wait_for_timeout(500)
        page.locator("#earlier").click()  # the third image is now the first

        def order() -> list[str]:
            text = page.locator("#images").inner_text().replace("\n", "")
            return sorted((name for name in ("0.png", "1.png", "2.png") if name in text), key=text.find)

        deadline = time.monotonic() + 30
        while order() != ["2.png", "0.png", "1.png"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert order() == ["2.png", "0.png", "1.png"]
