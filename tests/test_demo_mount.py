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

from serving.ui_app import ui_app
from demo.ui import build_demo
from demo_store import build_demo_store, service_with_demo
from serving.runtime import load_models
from training.store import STORE_ENV

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
