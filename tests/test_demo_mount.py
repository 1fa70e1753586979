"""The demo mounted at /ui of a BentoML service, as serving/service.py mounts it: the page and its API answer."""

from __future__ import annotations

import re
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from demo.ui import build_demo
from demo_store import build_demo_store, service_with_demo
from serving.runtime import load_models

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
