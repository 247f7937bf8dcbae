"""Take the README's picture of the page: a pair morphed at the default settings, in Chromium.

The page is served here, the two images are uploaded, Morph is pressed with every setting at its default,
and the whole page is captured once the video plays. Needs the [ui] extra, Playwright and Debian's chromium:

    python scripts/ui_screenshot.py A.png B.png docs/ui.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
from pathlib import Path

from playwright import sync_api

from diffmorph.ui import UiLimits, serve

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PLAYING = "() => { const v = document.querySelector('#video video'); return v !== null && v.readyState === 4; }"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("picture", type=Path, help="where to write the PNG")
    args = parser.parse_args()
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("Chromium is not installed: apt-get install chromium")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve(port=port, limits=UiLimits(), device="auto", block=False)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app.local_url)
            page.locator("#images input[type=file]").set_input_files([str(args.a), str(args.b)])
            page.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 2", timeout=60_000)
            page.locator("#morph").click()
            page.wait_for_function(PLAYING, timeout=600_000)
            page.wait_for_timeout(2000)  # the video shows a frame mid-morph
            page.screenshot(path=str(args.picture), full_page=True)
            browser.close()
    finally:
        app.close()
    print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
