"""Screenshots of every tab for the README, taken in headless Chromium over the real store.

    python -m demo.screenshots                # writes docs/demo-*.png (needs Debian's chromium, pip playwright)

Playwright drives the system Chromium (/usr/bin/chromium); nothing is downloaded. The browser test
(tests/test_demo_browser.py) starts Chromium the same way, through open_chromium.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium package
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
DOCS = Path("docs")
WAIT_MS = 30_000  # for the page and for each answer, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def open_chromium(profile: Path) -> Iterator["playwright.sync_api.BrowserContext"]:  # noqa: F821
    """A headless Chromium context with a fresh profile in `profile`, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                       args=CHROMIUM_FLAGS, viewport=VIEWPORT)
        try:
            yield context
        finally:
            context.close()


def draw(page, canvas_selector: str, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw `strokes` (points as fractions of the canvas box) with the mouse on a Sketchpad."""
    box = page.locator(f"{canvas_selector} canvas").first.bounding_box()
    side = min(box["width"], box["height"])  # the drawing area is square, centred in the component
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(left + x * side, top + y * side)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(left + x * side, top + y * side, steps=4)
        page.mouse.up()


SEVEN = [[(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]]  # a top bar, then the long diagonal stroke


def take(url: str, out: Path, profile: Path) -> list[Path]:
    """One screenshot per tab, each showing an answer; returns the files written."""
    written = []
    with open_chromium(profile) as context:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#classify-canvas canvas", timeout=WAIT_MS)
        page.wait_for_selector('#classify-canvas button.highlight[aria-label="Brush"]', timeout=WAIT_MS)
        draw(page, "#classify-canvas", SEVEN)
        page.wait_for_function("() => !document.querySelector('#classify-verdict').innerText.includes('Draw')",
                               timeout=WAIT_MS)
        time.sleep(1)  # the enlarged input arrives with the answer; let it paint
        written.append(shot(page, out / "demo-classify.png"))

        photos = page.locator("#classify-examples-cifar10 button.gallery-item")
        page.click("#classify-model input")
        cifar = page.get_by_role("option", name="cifar10", exact=False)
        if cifar.count():  # the photo model, if published, opens on its examples
            cifar.first.click()
            photos.first.wait_for(state="visible", timeout=WAIT_MS)
            photos.nth(8).click()  # a ship
            page.wait_for_selector("#classify-upload img", timeout=WAIT_MS)
            page.wait_for_function("() => document.querySelector('#classify-verdict').innerText.includes('ship')",
                                   timeout=WAIT_MS)
            time.sleep(1)
            written.append(shot(page, out / "demo-photo.png"))
        else:
            page.keyboard.press("Escape")

        page.get_by_role("tab", name="Reconstruct").click()
        page.locator("#reconstruct-examples button.gallery-item").nth(6).click()  # a sneaker
        page.wait_for_function("() => document.querySelector('#reconstruct-error').innerText.includes('error')",
                               timeout=WAIT_MS)
        time.sleep(1)
        written.append(shot(page, out / "demo-reconstruct.png"))

        page.get_by_role("tab", name="Heart risk").click()
        if page.locator("#heart-submit").count():  # the form is there: answer a real test row
            rows = page.locator("#heart-examples button.gallery-item")
            (rows.nth(1) if rows.count() > 1 else page.locator("#heart-submit")).click()
            page.wait_for_function("() => document.querySelector('#heart-explanation').innerText.length > 0",
                                   timeout=WAIT_MS)
        time.sleep(1)
        written.append(shot(page, out / "demo-heart.png"))

        page.get_by_role("tab", name="About the models").click()
        time.sleep(1)
        written.append(shot(page, out / "demo-about.png"))
    return written


def shot(page, path: Path) -> Path:
    """A PNG of the page as a visitor sees it (the window, not the whole scroll height), kept small."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    img = Image.open(path).convert("RGB")
    img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS).quantize(
        colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    from serving.runtime import load_models
    from training.store import store_from_env

    from .ui import build_demo

    with launched(build_demo(load_models(store_from_env()))) as url, \
            tempfile.TemporaryDirectory(prefix="demo-chromium-") as profile:
        for path in take(url, args.out, Path(profile)):
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


@contextlib.contextmanager
def launched(demo: "gr.Blocks") -> Iterator[str]:  # noqa: F821
    """`demo` on Gradio's own server at a free loopback port, for the screenshots, tests and benches; yields its URL."""
    from .ui import LAUNCH_OPTIONS

    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **LAUNCH_OPTIONS)
    try:
        yield demo.local_url
    finally:
        demo.close()


if __name__ == "__main__":
    main()
