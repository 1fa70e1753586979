"""The demo's guard (serving/ui_guard.py), probed as an attacker would, through the service's /ui mount."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from demo.ui import build_demo
from demo_store import EXAMPLE_DIGIT, build_demo_store, service_with_demo
from serving import gradio_compat, ui_guard
from serving.runtime import load_models

EVENT_ROUTES = ["/ui/gradio_api/call/classify_upload", "/ui/gradio_api/run/classify_upload",
                "/ui/gradio_api/api/classify_upload", "/ui/gradio_api/queue/join"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> gr.Blocks:
    return build_demo(load_models(build_demo_store(tmp_path_factory.getbasetemp())))


@pytest.fixture(scope="module")
def http(demo: gr.Blocks) -> Iterator[TestClient]:
    with service_with_demo(demo) as app, TestClient(app) as client:
        yield client


@pytest.fixture(autouse=True)
def nothing_is_opened_or_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio hashes a foreign file to copy it into its cache (forever, for /dev/zero), and downloads a URL
    (any size, to disk): no test may get there."""
    from gradio import processing_utils

    def refuse(path: Any, *args: Any, **kwargs: Any) -> str:
        pytest.fail(f"Gradio opened or fetched {path}")

    monkeypatch.setattr(processing_utils, "hash_file", refuse)
    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download", refuse)


def file_data(path: str) -> dict[str, Any]:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def event(route: str, file: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"data": ["digits", file]}
    if route.endswith("queue/join"):
        body.update(fn_index=1, session_hash="probe", event_data=None)
    return body


def upload(http: TestClient, *files: tuple[str, bytes]) -> Any:
    return http.post("/ui/gradio_api/upload", files=[("files", (name, data, "image/png")) for name, data in files])


def foreign_paths(tmp_path: Path) -> list[str]:
    """Files on the server the demo never received: system files, devices, /proc, the repository, a link
    to a system file, a picture in Gradio's own cache folder that this page did not create, URLs."""
    link = tmp_path / "innocent.png"
    link.symlink_to("/etc/passwd")
    planted = Path(gr.utils.get_upload_folder()) / "planted" / "x.png"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(EXAMPLE_DIGIT.read_bytes())
    repo = Path(__file__).resolve().parents[1]
    return ["/etc/hostname", "/etc/passwd", "/dev/zero", "/proc/self/environ", str(repo / "serving" / "service.py"),
            "serving/service.py", "../../etc/passwd", str(link), str(planted), str(EXAMPLE_DIGIT),
            "file:///etc/passwd", "https://example.com/x.png", " HTTP://127.0.0.1:1/x.png"]


@pytest.mark.parametrize("route", EVENT_ROUTES)
def test_a_file_the_demo_did_not_receive_is_refused_before_gradio_opens_it(http: TestClient, route: str,
                                                                           tmp_path: Path) -> None:
    for path in foreign_paths(tmp_path):
        for body in (event(route, file_data(path)), event(route, {"nested": [{"path": path}]})):
            answer = http.post(route, json=body)
            assert answer.status_code == 400, (path, answer.text)
            assert "upload" in answer.json()["detail"] and path.strip() not in answer.text


def test_a_body_sent_without_a_json_content_type_is_checked_too(http: TestClient) -> None:
    import json

    body = json.dumps(event(EVENT_ROUTES[0], file_data("/etc/passwd"))).encode()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {"content-type": content_type} if content_type else {}
        assert http.post(EVENT_ROUTES[0], content=body, headers=headers).status_code == 400


def test_an_uploaded_picture_is_answered_and_served_back(http: TestClient) -> None:
    answer = upload(http, ("seven.png", EXAMPLE_DIGIT.read_bytes()))
    assert answer.status_code == 200, answer.text
    (path,) = answer.json()
    event_id = http.post(EVENT_ROUTES[0], json=event(EVENT_ROUTES[0], file_data(path))).json()["event_id"]
    result = http.get(f"/ui/gradio_api/call/classify_upload/{event_id}").text
    assert "event: complete" in result and "7" in result, result[:1000]
    served = http.get(f"/ui/gradio_api/file={path}")
    assert served.status_code == 200 and served.content == EXAMPLE_DIGIT.read_bytes()


def test_only_files_the_page_made_are_served(http: TestClient, tmp_path: Path) -> None:
    for path in foreign_paths(tmp_path):
        for route in (f"/ui/gradio_api/file={path}", f"/ui/gradio_api/file/{path}"):
            assert http.get(route).status_code == 404, route
    page = http.get("/ui/config").json()  # the examples' thumbnails, copied into the cache by the page
    thumbnails = [v for v in str(page).split("'") if v.startswith("/") and v.endswith(".png") and "gradio" in v]
    assert thumbnails and http.get(f"/ui/gradio_api/file={thumbnails[0]}").status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/ui/monitoring"), ("GET", "/ui/monitoring/summary"), ("GET", "/ui/gradio_api/proxy=http://127.0.0.1:1/"),
    ("GET", "/ui/gradio_api/runs"), ("GET", "/ui/gradio_api/run-history/records"), ("GET", "/ui/gradio_api/vibe-code"),
    ("POST", "/ui/gradio_api/vibe-edit"), ("GET", "/ui/gradio_api/dev/reload"), ("POST", "/ui/login"),
    ("POST", "/ui/gradio_api/process_recording"), ("POST", "/ui/gradio_api/stream/x"), ("GET", "/ui/docs"),
    ("GET", "/ui/openapi.json"), ("PUT", "/ui/gradio_api/upload"), ("DELETE", "/ui/"), ("OPTIONS", "/ui/config")])
def test_routes_the_page_does_not_use_are_not_answered(http: TestClient, method: str, path: str) -> None:
    assert http.request(method, path).status_code == 404


def test_the_page_and_its_api_still_answer(http: TestClient) -> None:
    assert http.get("/ui/").status_code == 200 and http.get("/ui/config").status_code == 200
    assert http.get("/ui/gradio_api/info").status_code == 200 and http.get("/ui/theme.css").status_code == 200


@pytest.mark.parametrize("files, status, word", [
    ([("notes.txt", b"my notes")], 400, "picture"),
    ([("page.html", b"<script>alert(1)</script>")], 400, "picture"),
    ([("x.tif", b"II*\x00" + bytes(100))], 400, "picture"),
    ([(f"{i}.png", EXAMPLE_DIGIT.read_bytes()) for i in range(ui_guard.MAX_UPLOAD_FILES + 1)], 400, "pictures"),
    ([("big.png", b"\x89PNG" + bytes(ui_guard.MAX_UPLOAD_BYTES))], 413, "limit"),
])
def test_uploads_take_pictures_only(http: TestClient, files: list[tuple[str, bytes]], status: int, word: str) -> None:
    answer = upload(http, *files)
    assert answer.status_code == status and word in answer.json()["detail"], answer.text


def test_uploads_as_text_fields_are_refused(http: TestClient) -> None:
    answer = http.post("/ui/gradio_api/upload", files={"files": (None, "/etc/passwd")})
    assert answer.status_code == 400


def test_uploads_stop_when_recent_ones_fill_their_space(http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128), np.uint8)).save(noise, format="PNG")
    picture = noise.getvalue()
    monkeypatch.setattr(ui_guard, "MAX_RECENT_UPLOAD_BYTES", 3 * len(picture))  # earlier tests sent a few KB
    statuses = [upload(http, ("x.png", picture)).status_code for _ in range(4)]
    assert statuses == [200, 200, 503, 503], statuses
    assert upload(http, ("x.png", picture)).headers["retry-after"]


def test_each_process_keeps_its_pages_files_in_a_folder_of_its_own(http: TestClient) -> None:
    """Gradio names cached files by their bytes, machine-wide, and deletes all its app's files when the app
    stops: one worker's restart would delete another's uploads (serving.gradio_compat.use_own_cache_folder)."""
    (path,) = upload(http, ("z.png", EXAMPLE_DIGIT.read_bytes())).json()
    assert Path(path).is_relative_to(Path(gr.utils.get_upload_folder())) and f"pid-{os.getpid()}" in path


def test_gradio_keeps_the_files_it_made_where_the_guard_looks(http: TestClient, demo: gr.Blocks,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """serving/gradio_compat.py's assumptions: Blocks.temp_file_sets hold the page's uploads, by their path as
    the upload answered it, and its examples; the version it was written for is the one installed."""
    (path,) = upload(http, ("y.png", EXAMPLE_DIGIT.read_bytes())).json()
    assert gradio_compat.created(demo, path) and os.path.isfile(path)
    assert not gradio_compat.created(demo, "/etc/passwd") and not gradio_compat.created(demo, path + "/..")
    assert any(p.endswith("7-00000.png") for files in gradio_compat.created_files(demo) for p in files)
    gradio_compat.check_version()
    assert gr.__version__ == gradio_compat.WRITTEN_FOR and "written for gradio" not in caplog.text
