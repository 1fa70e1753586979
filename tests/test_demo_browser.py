"""The demo in a real browser: headless Chromium (Debian's package) driven by Playwright, nothing downloaded.

Skipped only where /usr/bin/chromium or the playwright package is missing (CI installs both).
Most tests are a visitor's whole journey (draw, clear, draw again; switch model; upload; the other tabs),
each step waiting until the demo has computed a new answer, shows it, and has nothing left "processing".
The screenshots are kept as test artefacts in pytest's temporary folder; their paths are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from demo import views
from serving.ui_app import ui_app
from demo.screenshots import CHROMIUM, SEVEN, WAIT_MS, draw, free_port, open_chromium
from demo.ui import build_demo
from demo_store import EXAMPLE_DIGIT, build_demo_store, service_with_demo
from serving.runtime import ServedModels, load_models

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra); it drives Debian's Chromium")

UPLOAD_DELAY_S = 1.0  # as on a busy machine: the canvas uploads its drawing again for each of its events
ONE = [[(0.5, 0.2), (0.5, 0.8)]]    # a single stroke, top to bottom
BAR = [[(0.25, 0.5), (0.75, 0.5)]]  # a single stroke, left to right
# Status trackers that show progress or an error on the visible page (a finished one has the class "hide").
BUSY_TRACKERS = """() => [...document.querySelectorAll('[data-testid="status-tracker"]:not(.hide)')]
  .filter((tracker) => tracker.offsetParent !== null).map((tracker) => tracker.innerText.trim() || 'spinner')"""


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


class SlowUploads:
    """`app`, answering each file upload UPLOAD_DELAY_S late: the page's other messages overtake the uploads."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/gradio_api/upload"):
            await asyncio.sleep(UPLOAD_DELAY_S)
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def slow_url(models: ServedModels) -> Iterator[str]:
    """The demo alone, its uploads slowed down as on a busy machine."""
    with serving(SlowUploads(ui_app(build_demo(models)))) as root:
        yield root


@pytest.fixture(scope="module")
def bento_url(models: ServedModels) -> Iterator[str]:
    """A BentoML service with the demo at /ui (as serving/service.py mounts it), on uvicorn."""
    with service_with_demo(build_demo(models)) as app, serving(app) as root:
        yield root + "ui/"


@contextlib.contextmanager
def ready_page(url: str, profile: Path) -> Iterator[Any]:
    """The demo open in a fresh headless Chromium, its canvas ready: the brush selected without a click."""
    with open_chromium(profile) as browser:
        page = browser.new_page()
        page.goto(url)
        brush_ready(page, "classify-canvas")
        yield page


def brush_ready(page, canvas: str) -> None:
    page.wait_for_selector(f'#{canvas} button.highlight[aria-label="Brush"]', timeout=WAIT_MS)


def press(page, canvas: str, button: str) -> Callable[[], None]:
    """A click on one of the canvas's own buttons (Undo, Redo, Clear canvas), for a step to do."""
    return lambda: page.click(f'#{canvas} button[aria-label="{button}"]')


def open_tab(page, name: str) -> None:
    """Select the visible tab called `name` (the classify and reconstruct tabs each have a Draw tab)."""
    page.locator("button[role=tab]:visible", has_text=name).click()


# -- each step of a journey: act, then wait for the answer the demo computed to be shown, with nothing busy

class Answers:
    """Every answer the page's events computed, per kind, as (arguments, answer): views' functions, recorded."""

    RECORDED = {"classify": "classify", "reconstruct": "reconstruct", "heart": "predict_heart"}
    SHOWN = {"classify": ("#classify-verdict", lambda answer: answer.verdict),
             "reconstruct": ("#reconstruct-error", lambda answer: answer.report),
             "heart": ("#heart-explanation", lambda answer: answer[1])}

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.seen: dict[str, list[tuple[tuple, Any]]] = {kind: [] for kind in self.RECORDED}
        for kind, name in self.RECORDED.items():
            monkeypatch.setattr(views, name, self._recording(kind, getattr(views, name)))

    def _recording(self, kind: str, compute: Callable) -> Callable:
        def recorded(*args: Any) -> Any:
            answer = compute(*args)
            self.seen[kind].append((args, answer))
            return answer
        return recorded

    def step(self, page, kind: str, act: Callable[[], None], expected: Callable[[tuple, Any], bool],
             what: str) -> tuple[tuple, Any]:
        """Do `act`; then wait for a new `kind` answer that is `expected`, shown on the page, with nothing busy.

        Fails, saying what the page shows and which status trackers are still busy, when it does not come
        within WAIT_MS: the demo did not answer, or left a "processing" that does not end.
        """
        where, text = self.SHOWN[kind]
        before = len(self.seen[kind])

        def done() -> bool:
            if len(self.seen[kind]) == before or not expected(*self.seen[kind][-1]):
                return False
            return shown(page.inner_text(where)) == shown(text(self.seen[kind][-1][1])) and settled(page)

        act()
        deadline = time.monotonic() + WAIT_MS / 1000
        while not done():
            if time.monotonic() > deadline:
                new = [(tuple(a for a in args if isinstance(a, (str, float))), text(answer))
                       for args, answer in self.seen[kind][before:]]
                pytest.fail(f"waited {WAIT_MS / 1000:.0f} s for {what}: new {kind} answers {new}; the page shows "
                            f"{page.inner_text(where)!r}; still busy: {page.evaluate(BUSY_TRACKERS)}")
            page.wait_for_timeout(100)
        return self.seen[kind][-1]


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Answers:
    return Answers(monkeypatch)


def shown(markdown: str) -> str:
    """The text a visitor reads for one of views' Markdown answers."""
    return markdown.replace("**", "").strip()


def settled(page) -> bool:
    """No status tracker on the visible page still shows progress (or an error)."""
    return not page.evaluate(BUSY_TRACKERS)


def classified(answers: Answers, page, act: Callable[[], None], model: str, what: str) -> views.Classification:
    """`act`, then the classify tab shows `model`'s answer to a picture with something in it."""
    _, answer = answers.step(page, "classify", act, lambda args, answer: args[1] == model and
                             answer.confidences is not None, what)
    return answer


def emptied(answers: Answers, page, act: Callable[[], None], what: str) -> None:
    """`act`, then the classify tab says there is nothing to classify, and the brush is ready for the next drawing."""
    answers.step(page, "classify", act, lambda args, answer: answer.verdict == views.DRAW_SOMETHING, what)
    brush_ready(page, "classify-canvas")


def looks_for(page, label: str, what: str) -> None:
    """The "Where it looks" picture shows a map, its note naming `label`, with nothing busy."""
    expected, deadline = f"Where it looks for {label}:", time.monotonic() + WAIT_MS / 1000
    while not (expected in page.inner_text("#classify-looks-note") and settled(page)):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_MS / 1000:.0f} s for {what}: the note says "
                        f"{page.inner_text('#classify-looks-note')!r}; still busy: {page.evaluate(BUSY_TRACKERS)}")
        page.wait_for_timeout(100)
    assert page.locator("#classify-looks img").count() == 1, what


def drawing(page, canvas: str, strokes: list) -> Callable[[], None]:
    return lambda: draw(page, f"#{canvas}", strokes)


# -- the tests

def test_drawing_a_digit_shows_its_prediction(url: str, answers: Answers, tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        assert "digits" in page.locator("#classify-model input").input_value()
        assert shown(page.inner_text("#classify-verdict")) == shown(views.DRAW_SOMETHING)

        answer = classified(answers, page, drawing(page, "classify-canvas", SEVEN), "digits", "the drawn 7")
        best = max(answer.confidences, key=answer.confidences.get)
        assert best in page.inner_text("#classify-verdict")
        page.wait_for_function(f"() => {list(answer.confidences)[:5]!r}.every(name => "
                               "document.querySelector('#classify-label').innerText.includes(name))", timeout=WAIT_MS)
        assert page.locator("#classify-seen img").count() == 1  # what the model sees
        looks_for(page, best, "the drawn 7's top class")
        page.screenshot(path=str(tmp_path / "demo-browser-drawing.png"))
        print(f"screenshot: {tmp_path / 'demo-browser-drawing.png'}")

        other = list(answer.confidences)[2]  # the third class in the list, clicked
        before = page.locator("#classify-looks img").get_attribute("src")
        page.click(f'#classify-label [data-testid="{other}-confidence-set"]')
        looks_for(page, other, "a class clicked in the list")
        assert page.locator("#classify-looks img").get_attribute("src") != before

        answer = classified(answers, page, drawing(page, "classify-canvas", BAR), "digits", "another stroke")
        looks_for(page, max(answer.confidences, key=answer.confidences.get), "the new top class after a stroke")


@pytest.mark.parametrize("server", ["url", "slow_url"])
def test_drawing_again_after_clearing_the_canvas_is_answered_every_time(server: str, answers: Answers, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    with ready_page(request.getfixturevalue(server), tmp_path / "profile") as page:
        for n, strokes in enumerate([ONE, SEVEN, BAR, ONE]):
            classified(answers, page, drawing(page, "classify-canvas", strokes), "digits", f"drawing {n + 1}")
            emptied(answers, page, lambda: page.click("#classify-clear"), f"clear {n + 1}")
        classified(answers, page, drawing(page, "classify-canvas", SEVEN), "digits", "the last drawing")
        page.screenshot(path=str(tmp_path / "demo-browser-cleared.png"))


def test_the_canvas_own_undo_and_clear_buttons_keep_it_answering(url: str, answers: Answers,
                                                                  tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        canvas = "classify-canvas"
        classified(answers, page, drawing(page, canvas, ONE), "digits", "the first stroke")
        classified(answers, page, drawing(page, canvas, BAR), "digits", "the second stroke")
        classified(answers, page, press(page, canvas, "Undo"), "digits", "undoing the second stroke")
        emptied(answers, page, press(page, canvas, "Undo"), "undoing the first stroke")
        classified(answers, page, drawing(page, canvas, SEVEN), "digits", "drawing after undoing everything")
        emptied(answers, page, press(page, canvas, "Clear canvas"), "the canvas's own clear")
        classified(answers, page, drawing(page, canvas, ONE), "digits", "drawing after the canvas's clear")


def test_switching_model_mid_drawing_then_drawing_again(url: str, models: ServedModels, answers: Answers,
                                                       tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        canvas = "classify-canvas"

        def choose(name: str) -> Callable[[], None]:
            def open_menu_and_pick() -> None:
                page.click("#classify-model input")
                page.get_by_role("option", name=views.model_choice(models.models[name])).click()
            return open_menu_and_pick

        classified(answers, page, drawing(page, canvas, ONE), "digits", "a stroke for digits")
        answer = classified(answers, page, choose("fashion"), "fashion", "the drawing answered by fashion")
        assert set(answer.confidences) <= set(models.models["fashion"].labels)
        classified(answers, page, drawing(page, canvas, BAR), "fashion", "a stroke for fashion")
        emptied(answers, page, lambda: page.click("#classify-clear"), "clearing under fashion")
        classified(answers, page, drawing(page, canvas, SEVEN), "fashion", "a drawing for fashion")
        classified(answers, page, choose("digits"), "digits", "the drawing answered by digits again")
        classified(answers, page, drawing(page, canvas, ONE), "digits", "a stroke for digits again")


def test_uploading_or_picking_an_example_then_drawing_again(url: str, models: ServedModels, answers: Answers,
                                                           tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        canvas = "classify-canvas"
        open_tab(page, "Upload or pick an example")
        examples = page.locator("#classify-examples-digits button.gallery-item")
        assert examples.count() == len(views.example_files("mnist"))
        assert page.locator("#classify-examples-fashion").is_hidden()  # only the chosen model's examples
        upload = lambda: page.set_input_files("#classify-upload input[type=file]", EXAMPLE_DIGIT)
        answer = classified(answers, page, upload, "digits", "an uploaded 7")
        assert answer.verdict == views.classify(models, "digits", EXAMPLE_DIGIT.read_bytes()).verdict

        open_tab(page, "Draw")
        brush_ready(page, canvas)
        classified(answers, page, drawing(page, canvas, ONE), "digits", "drawing after the upload")

        open_tab(page, "Upload or pick an example")
        example, _ = views.example_files("mnist")[1]
        answer = classified(answers, page, lambda: examples.nth(1).click(), "digits", "a clicked example")
        assert answer.verdict == views.classify(models, "digits", Path(example).read_bytes()).verdict
        page.screenshot(path=str(tmp_path / "demo-browser-example.png"))

        open_tab(page, "Draw")
        emptied(answers, page, lambda: page.click("#classify-clear"), "clearing after the example")
        classified(answers, page, drawing(page, canvas, SEVEN), "digits", "drawing after the example")


def test_a_photo_model_opens_its_examples_then_a_drawing_model_draws(url: str, models: ServedModels,
                                                                    answers: Answers, tmp_path: Path) -> None:
    with ready_page(url, tmp_path / "profile") as page:
        page.click("#classify-model input")
        page.get_by_role("option", name=views.model_choice(models.models["cifar10"])).click()
        examples = page.locator("#classify-examples-cifar10 button.gallery-item")
        examples.first.wait_for(state="visible", timeout=WAIT_MS)  # the upload tab was chosen for us
        assert page.locator("#classify-canvas").is_hidden()
        assert examples.count() == len(views.example_files("cifar10"))
        answer = classified(answers, page, lambda: examples.first.click(), "cifar10", "a photo example")
        assert set(answer.confidences) <= set(models.models["cifar10"].labels)
        page.screenshot(path=str(tmp_path / "demo-browser-photo.png"))

        page.click("#classify-model input")
        back = lambda: page.get_by_role("option", name=views.model_choice(models.models["digits"])).click()
        classified(answers, page, back, "digits", "the photo answered by digits")
        open_tab(page, "Draw")
        brush_ready(page, "classify-canvas")
        classified(answers, page, drawing(page, "classify-canvas", SEVEN), "digits", "a drawing for digits")


def test_the_page_mounted_in_bentoml_draws_clears_and_draws_again(bento_url: str, answers: Answers,
                                                                  tmp_path: Path) -> None:
    with ready_page(bento_url, tmp_path / "profile") as page:
        classified(answers, page, drawing(page, "classify-canvas", ONE), "digits", "a drawing at /ui/")
        emptied(answers, page, lambda: page.click("#classify-clear"), "clear at /ui/")
        classified(answers, page, drawing(page, "classify-canvas", SEVEN), "digits", "drawing again at /ui/")
        page.screenshot(path=str(tmp_path / "demo-browser-bentoml.png"))
        print(f"screenshot: {tmp_path / 'demo-browser-bentoml.png'}")


def test_the_reconstruct_tab_draws_and_uploads_in_turn(url: str, answers: Answers, tmp_path: Path) -> None:
    def reconstructed(act: Callable[[], None], what: str) -> views.Reconstruction:
        _, answer = answers.step(page, "reconstruct", act, lambda args, r: r.reconstruction is not None, what)
        assert page.locator("#reconstruct-output img").count() == 1
        return answer

    garments = [Path(path) for path, _ in views.example_files("fashion_mnist")]
    with ready_page(url, tmp_path / "profile") as page:
        canvas = "reconstruct-canvas"
        page.get_by_role("tab", name="Reconstruct").click()
        upload = lambda: page.set_input_files("#reconstruct-upload input[type=file]", garments[0])
        reconstructed(upload, "an uploaded garment")

        open_tab(page, "Draw")
        brush_ready(page, canvas)
        reconstructed(drawing(page, canvas, ONE), "a drawing")
        nothing = (views.RECONSTRUCT_SOMETHING, views.BLANK_PICTURE)
        answers.step(page, "reconstruct", press(page, canvas, "Clear canvas"), lambda args, r: r.report in nothing,
                     "the canvas's own clear")
        brush_ready(page, canvas)
        reconstructed(drawing(page, canvas, BAR), "drawing after clearing")

        open_tab(page, "Upload or pick an example")
        reconstructed(lambda: page.locator("#reconstruct-examples button.gallery-item").nth(3).click(), "an example")
        open_tab(page, "Draw")
        brush_ready(page, canvas)
        reconstructed(drawing(page, canvas, SEVEN), "drawing after the example")


def test_the_heart_form_answers_each_submission(url: str, answers: Answers, tmp_path: Path) -> None:
    def estimated(act: Callable[[], None], what: str) -> dict[str, Any]:
        (_, row), _ = answers.step(page, "heart", act, lambda args, answer: answer[0] is not None, what)
        return row

    def fill(label: str, value: float) -> None:
        page.get_by_label(label, exact=True).fill(str(value))
        page.get_by_label(label, exact=True).press("Tab")

    with ready_page(url, tmp_path / "profile") as page:
        page.get_by_role("tab", name="Heart risk").click()
        submit = lambda: page.click("#heart-submit")
        fill("number input for Age", 67)
        fill("Cholesterol", 289)
        first = estimated(submit, "the first submission")
        assert (first["Age"], first["Cholesterol"]) == (67, 289)

        fill("number input for Age", 41)
        fill("number input for Maximum heart rate", 172)
        fill("Cholesterol", 0)
        second = estimated(submit, "the second submission, with other values")
        assert (second["Age"], second["MaxHR"], second["Cholesterol"]) == (41, 172, 0)

        estimated(lambda: page.locator("#heart-examples button.gallery-item").first.click(), "a test-set row")
        page.screenshot(path=str(tmp_path / "demo-browser-heart.png"))
