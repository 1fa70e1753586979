"""API keys (serving/auth.py): the keys file, the middleware, and `bentoml serve` with keys on."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from reliability.server import REPO, Server
from serving.auth import KEYS_ENV, METRICS_OPEN_ENV, ApiKeys, KeyFileError, KeyGuard
from serving_store import HEART_ROW, build_store
from training.store import STORE_ENV

KEY, OTHER_KEY = "k-3f9a2c7d41e0b6a8", "k-second-key-0042"


def keys_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys"
    path.write_text(text)
    return path


def test_a_keys_file_holds_keys_or_their_sha256(tmp_path: Path) -> None:
    hashed = hashlib.sha256(OTHER_KEY.encode()).hexdigest()
    keys = ApiKeys.read(keys_file(tmp_path, f"# ops team\n{KEY}\n\nsha256:{hashed}\n"))
    assert keys.valid(KEY) and keys.valid(OTHER_KEY)
    assert not keys.valid("") and not keys.valid(KEY + "x") and not keys.valid(f"sha256:{hashed}")


@pytest.mark.parametrize("text, word", [("", "no key"), ("# only a comment\n", "no key"),
                                        ("sha256:abc\n", "64 hex"), ("sha256:" + "z" * 64, "64 hex")])
def test_an_unusable_keys_file_is_refused_with_a_reason(tmp_path: Path, text: str, word: str) -> None:
    with pytest.raises(KeyFileError, match=word):
        ApiKeys.read(keys_file(tmp_path, text))
    with pytest.raises(KeyFileError, match="cannot read"):
        ApiKeys.read(tmp_path / "missing")


@pytest.fixture()
def guarded(tmp_path: Path) -> TestClient:
    app = KeyGuard(PlainTextResponse("ok"), ApiKeys.read(keys_file(tmp_path, KEY)), own_login=("/ui",))
    return TestClient(app)


@pytest.mark.parametrize("headers", [{}, {"authorization": ""}, {"authorization": "Bearer"},
                                     {"authorization": "Bearer "}, {"authorization": f"Basic {KEY}"},
                                     {"authorization": f"Bearer {KEY}x"}, {"authorization": "Bearer " + "a" * 10_000},
                                     {"authorization": f"Bearer\t{KEY}"}, {"x-api-key": KEY}])
def test_a_missing_malformed_or_wrong_key_is_401(guarded: TestClient, headers: dict[str, str]) -> None:
    answer = guarded.get("/classify", headers=headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert "key" in answer.json()["error"] and KEY not in answer.text


def test_a_valid_key_lets_the_request_through(guarded: TestClient) -> None:
    for scheme in ("Bearer", "bearer"):
        assert guarded.get("/models", headers={"authorization": f"{scheme} {KEY}"}).text == "ok"


def test_probes_and_the_demos_own_login_need_no_key(guarded: TestClient) -> None:
    for path in ("/livez", "/readyz", "/ui", "/ui/", "/ui/config"):
        assert guarded.get(path).status_code == 200, path
    assert guarded.get("/uix").status_code == 401 and guarded.get("/metrics").status_code == 401


def test_a_key_in_the_url_is_refused(guarded: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    for query in (f"api_key={KEY}", f"token={KEY}", f"KEY={KEY}", "access_token="):
        answer = guarded.get(f"/models?{query}", headers={"authorization": f"Bearer {KEY}"})
        assert answer.status_code == 400 and "header" in answer.json()["error"] and KEY not in answer.text
    assert KEY not in caplog.text


def test_metrics_may_be_left_open_for_a_scraper(tmp_path: Path) -> None:
    app = KeyGuard(PlainTextResponse("ok"), ApiKeys.read(keys_file(tmp_path, KEY)), metrics_open=True)
    assert TestClient(app).get("/metrics").text == "ok"


# -- bentoml serve with keys on


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("keys")
    store = build_store(tmp_path_factory.getbasetemp() / "serving")  # shared with test_serving.py
    running = Server(["serving.service:ModelService"], REPO,
                     {STORE_ENV: str(store), KEYS_ENV: str(keys_file(work, KEY)), METRICS_OPEN_ENV: "1"},
                     work / "serve.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_bentoml_serve_asks_every_endpoint_for_a_key(server: Server) -> None:
    with_key = {"authorization": f"Bearer {KEY}"}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/heart", {"json": HEART_ROW}), ("GET", "/models", {}), ("GET", "/docs.json", {}), ("GET", "/", {}),
        ("POST", "/classify", {"files": {"image": ("x.png", b"x")}, "data": {"model": "fashion"}})]
    for method, path, kwargs in requests:
        assert httpx.request(method, server.url + path, **kwargs).status_code == 401, path
        assert httpx.request(method, server.url + path, headers=with_key, **kwargs).status_code < 401, path
    assert httpx.post(server.url + "/heart", json=HEART_ROW, headers=with_key).json()["label"]
    for path in ("/livez", "/readyz", "/metrics"):  # /metrics: SERVING_METRICS_OPEN=1
        assert httpx.get(server.url + path).status_code == 200, path


def test_with_keys_on_the_demo_asks_for_a_login(server: Server) -> None:
    with httpx.Client(base_url=server.url + "/ui", timeout=30) as browser:
        assert browser.get("/config").status_code == 401  # Gradio's own login guards the page's API
        assert browser.post("/login", data={"username": "me", "password": "wrong"}).status_code == 400
        assert browser.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        assert browser.get("/config").status_code == 200 and browser.get("/gradio_api/info").status_code == 200


def test_the_service_listens_on_this_machine_only_unless_asked() -> None:
    from serving.service import ModelService

    assert ModelService.config["http"]["host"] == "127.0.0.1"


def test_listening_beyond_this_machine_without_keys_is_warned_of(caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    from serving import service

    class Listening:
        status, laddr = psutil.CONN_LISTEN, type("addr", (), {"ip": "0.0.0.0"})

    monkeypatch.setattr(psutil.Process, "net_connections", lambda self, kind: [Listening()])
    with caplog.at_level(logging.WARNING, logger="bentoml.serving"):
        service.warn_if_open()
    assert "0.0.0.0" in caplog.text and KEYS_ENV in caplog.text
    caplog.clear()
    Listening.laddr.ip = "127.0.0.1"
    service.warn_if_open()
    assert not caplog.text
