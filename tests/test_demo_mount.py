"""The demo mounted at /ui of a BentoML service, as serving/service.py mounts it: the page and its API answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from demo.mount import ui_app
from demo.ui import build_demo
from demo_store import build_demo_store, service_with_demo
from serving.runtime import STORE_ENV, load_models

MAX_FILE_BYTES = 10 * 1024 * 1024  # demo.ui.MAX_FILE_SIZE, "10mb"


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    demo = build_demo(load_models(build_demo_store(tmp_path_factory.getbasetemp())))
    with service_with_demo(demo) as app, TestClient(app) as client:  # the lifespan creates the service
        yield client


def test_page_renders_under_ui(http: TestClient) -> None:
    page = http.get("/ui/")
    assert page.status_code == 200, page.text[:500]
    assert "classic-dl demo" in page.text and "window.gradio_config" in page.text
    scripts = re.findall(r'src="([^"]+\.js)"', page.text)
    assert scripts, "the page loads no script"
    for src in scripts:  # the page's own assets are served under /ui as well
        path = src if src.startswith("/") else "/ui/" + src.split("/ui/", 1)[-1]
        assert http.get(path).status_code == 200, src


def test_gradio_api_and_service_api_side_by_side(http: TestClient) -> None:
    info = http.get("/ui/gradio_api/info")
    assert info.status_code == 200
    assert {"/classify_drawing", "/classify_upload", "/reconstruct_upload", "/heart"} <= set(
        info.json()["named_endpoints"])
    assert http.get("/ui/config").json()["title"] == "classic-dl demo"
    assert http.post("/ping", json={}).text == "pong"


def test_uploads_over_the_limit_are_refused(http: TestClient) -> None:
    too_big = b"\0" * (MAX_FILE_BYTES + 1)
    answer = http.post("/ui/gradio_api/upload", files={"files": ("big.png", too_big, "image/png")})
    assert answer.status_code == 413
    assert http.post("/ui/gradio_api/upload", files={"files": ("small.png", b"\0" * 100, "image/png")}).is_success


def test_a_file_given_as_a_url_is_refused_before_gradio_fetches_it(http: TestClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from gradio import processing_utils

    async def fetch(url: str, cache_dir: str) -> str:
        pytest.fail(f"Gradio fetched {url}")

    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download", fetch)
    remote = {"path": "https://example.com/x.png", "meta": {"_type": "gradio.FileData"}}
    for path, body in [("/ui/gradio_api/call/classify_upload", {"data": ["digits", remote]}),
                       ("/ui/gradio_api/queue/join", {"data": ["digits", remote], "fn_index": 1,
                                                      "session_hash": "x", "event_data": None}),
                       ("/ui/gradio_api/run/reconstruct_upload", {"data": [{"nested": [{**remote, "path": " HTTP://a"}]}]})]:
        answer = http.post(path, json=body)
        assert answer.status_code == 400 and "URL" in answer.json()["detail"], (path, answer.text)
    assert http.post("/ui/gradio_api/call/classify_upload", json={"data": ["digits", None]}).status_code == 200


def test_the_page_is_built_when_the_app_starts(tmp_path: Path) -> None:
    calls: list[str] = []
    app = ui_app(started=lambda: calls.append("started"))
    assert TestClient(app).get("/").status_code == 503 and not calls  # not started: no lifespan has run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STORE_ENV, str(tmp_path / "empty"))  # named after ui_app() was called
        with TestClient(app) as client:
            assert calls == ["started"]
            assert "the store is empty" in client.get("/config").text


def test_importing_the_service_loads_no_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    """BentoML's supervisor imports the service but serves nothing: it must not hold models (on a GPU, a CUDA
    context each), only the workers that start the apps."""
    store = build_demo_store(tmp_path_factory.getbasetemp())
    probe = ("import onnxruntime\n"
             "def refuse(*args, **kwargs): raise SystemExit('a model was loaded at import')\n"
             "onnxruntime.InferenceSession = refuse\n"
             "import serving.service\n")
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, STORE_ENV: str(store)},
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
