"""The demo in a real browser: headless Chromium (Debian's package) driven by Playwright, nothing downloaded.

Skipped only where /usr/bin/chromium or the playwright package is missing (CI installs both).
The screenshots are kept as test artefacts in pytest's temporary folder; their paths are printed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from demo import views
from demo.mount import ui_app
from demo.screenshots import CHROMIUM, SEVEN, WAIT_MS, draw, free_port, open_chromium
from demo.ui import build_demo
from demo_store import build_demo_store, service_with_demo
from serving.runtime import ServedModels, load_models

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra); it drives Debian's Chromium")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ServedModels:
    return load_models(build_demo_store(tmp_path_factory.getbasetemp()))


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on uvicorn in a thread, as `python -m demo` and `bentoml serve` run it; yields its root URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_MS / 1000
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def url(models: ServedModels) -> Iterator[str]:
    """The demo alone, as `python -m demo` serves it."""
    with serving(ui_app(build_demo(models))) as root:
        yield root


@contextlib.contextmanager
def ready_page(url: str, profile: Path) -> Iterator[Any]:
    """The demo open in a fresh headless Chromium, its canvas ready: the brush selected without a click."""
    with open_chromium(profile) as browser:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector('#classify-canvas button.highlight[aria-label="Brush"]', timeout=WAIT_MS)
        yield page


def verdict_is_not(page, text: str) -> None:
    page.wait_for_function(f"() => !document.querySelector('#classify-verdict').innerText.includes({text!r})",
                           timeout=WAIT_MS)


def test_drawing_a_digit_shows_its_prediction(url: str, models: ServedModels, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[views.Classification] = []
    classify = views.classify

    def recorded(*args, **kwargs) -> views.Classification:
        answers.append(classify(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(views, "classify", recorded)
    with ready_page(url, tmp_path / "profile") as page:
        assert "digits" in page.locator("#classify-model input").input_value()
        assert "Draw something" in page.inner_text("#classify-verdict")

        draw(page, "#classify-canvas", SEVEN)
        verdict_is_not(page, "Draw something")
        page.wait_for_timeout(500)  # the label and the enlarged input arrive with the verdict
        shown = answers[-1]
        assert shown.confidences, shown.verdict
        best = max(shown.confidences, key=shown.confidences.get)
        assert best in page.inner_text("#classify-verdict")
        label_text = page.inner_text("#classify-label")
        assert all(name in label_text for name in list(shown.confidences)[:5])
        assert page.locator("#classify-seen img").count() == 1  # what the model sees
        page.screenshot(path=str(tmp_path / "demo-browser-drawing.png"))
        print(f"screenshot: {tmp_path / 'demo-browser-drawing.png'}")

        page.click("#classify-clear")  # drawing nothing says so instead of predicting
        page.wait_for_function("() => document.querySelector('#classify-verdict').innerText.includes('Draw something')",
                               timeout=WAIT_MS)
        page.wait_for_selector('#classify-canvas button.highlight[aria-label="Brush"]', timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "demo-browser-cleared.png"))


@pytest.fixture(scope="module")
def bento_url(models: ServedModels) -> Iterator[str]:
    """A BentoML service with the demo at /ui (as serving/service.py mounts it), on uvicorn."""
    with service_with_demo(build_demo(models)) as app, serving(app) as root:
        yield root + "ui/"


def test_the_page_mounted_in_bentoml_renders_and_answers(bento_url: str, tmp_path: Path) -> None:
    with ready_page(bento_url, tmp_path / "profile") as page:
        draw(page, "#classify-canvas", SEVEN)
        verdict_is_not(page, "Draw something")
        page.screenshot(path=str(tmp_path / "demo-browser-bentoml.png"))
        print(f"screenshot: {tmp_path / 'demo-browser-bentoml.png'}")
        assert "Cannot" not in page.inner_text("#classify-verdict")


def test_switching_model_and_clicking_an_example(url: str, models: ServedModels, tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        draw(page, "#classify-canvas", SEVEN)
        verdict_is_not(page, "Draw something")
        page.click("#classify-model input")  # the menu: the drawing is answered again by the new model
        page.get_by_role("option", name=views.model_choice(models.models["fashion"])).click()
        fashion = models.models["fashion"].labels
        page.wait_for_function(f"() => {fashion!r}.some(l => document.querySelector('#classify-label').innerText"
                               ".includes(l))", timeout=WAIT_MS)

        page.get_by_role("tab", name="Upload or pick an example").click()
        examples = page.locator("#classify-examples-fashion button.gallery-item")
        assert examples.count() == len(views.example_files("fashion_mnist"))
        page.locator("#classify-examples-digits").wait_for(state="hidden")  # only the chosen model's examples
        first_example, _ = views.example_files("fashion_mnist")[0]
        expected = views.classify(models, "fashion", Path(first_example).read_bytes()).verdict.replace("**", "")
        examples.first.click()
        page.wait_for_function(f"() => document.querySelector('#classify-verdict').innerText.trim() === {expected!r}",
                               timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "demo-browser-example.png"))


def test_a_photo_model_opens_its_examples_instead_of_the_canvas(url: str, models: ServedModels,
                                                                  tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        page.click("#classify-model input")
        page.get_by_role("option", name=views.model_choice(models.models["cifar10"])).click()
        examples = page.locator("#classify-examples-cifar10 button.gallery-item")
        examples.first.wait_for(state="visible", timeout=WAIT_MS)  # the upload tab was chosen for us
        assert page.locator("#classify-canvas").is_hidden()
        assert examples.count() == len(views.example_files("cifar10"))
        examples.first.click()
        verdict_is_not(page, "Draw something")
        labels = models.models["cifar10"].labels
        assert any(label in page.inner_text("#classify-verdict") for label in labels)
        page.screenshot(path=str(tmp_path / "demo-browser-photo.png"))
