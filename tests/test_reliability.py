"""The fast subset of the reliability checks (issue 7, docs/RELIABILITY.md); `python -m reliability` runs the long ones.

Fuzzing (schemathesis over the OpenAPI document, Hypothesis pictures), security refusals, damaged and
missing models, publishing under load, SIGTERM and SIGKILL of `bentoml serve`, and a training run
SIGKILLed while it writes a checkpoint.
"""

from __future__ import annotations

import http.server
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from starlette.testclient import TestClient

from reliability import adversarial, faults, training_kills
from reliability.fuzz import fuzzed_schema, image_fuzz
from serving import bentoml_compat
from serving.auth import ApiKeys, KeyGuard
from serving.service import MAX_JSON_BYTES, ModelService
from serving_store import HEART_ROW, build_store
from test_serving import PHOTO_PNG, image_form, serve
from training.checkpoint import load_checkpoint
from training.store import MODEL_FILE, STORE_ENV, latest

NO_METRICS = json.dumps({"services": {"classic-dl": {"metrics": {"enabled": False}}}})  # see test_serving.serve
API_ROUTES = frozenset(api.route for api in ModelService.apis.values())  # every endpoint, as the service declares


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.getbasetemp() / "serving")  # shared with test_serving.py


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    with serve(store) as c:
        yield c


# -- fuzzing


@pytest.fixture(scope="module")
def api_schema(store: Path) -> Any:
    """The service's own /docs.json, `model` fields narrowed to the served names, on a started in-process app."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_CONFIG_OVERRIDES", NO_METRICS)
        mp.setenv(STORE_ENV, str(store))
        app = ModelService.to_asgi()
        with asgi.get_client(app) as http:  # starts the app (loads the models) for the rest of the session
            spec, names = http.get("/docs.json").json(), sorted(http.get("/models").json()["models"])
    schema = schemathesis.openapi.from_dict(fuzzed_schema(spec, names))
    schema.app = app
    return schema


def test_schemathesis_finds_no_server_error(api_schema: Any) -> None:
    """Every operation of the OpenAPI document, 30 generated valid and invalid requests each: never a 5xx.

    (Driven by Hypothesis directly: schemathesis' pytest plugin does not run under pytest 9.)
    """
    fuzz_every_operation(api_schema, examples=30)


def test_schemathesis_finds_no_server_error_with_api_keys_on(api_schema: Any, store: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with keys on (serving.auth), each request sent with a valid key: no 5xx either."""
    (options,) = [options for cls, options in ModelService.middlewares if cls is KeyGuard]
    (tmp_path / "keys").write_text("k-fuzz\n")
    monkeypatch.setitem(options, "keys", ApiKeys.read(tmp_path / "keys"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_CONFIG_OVERRIDES", NO_METRICS)
        mp.setenv(STORE_ENV, str(store))
        app = ModelService.to_asgi()
        with asgi.get_client(app) as http:
            assert http.get("/models").status_code == 401
    monkeypatch.setattr(api_schema, "app", app)
    fuzz_every_operation(api_schema, examples=10, headers={"Authorization": "Bearer k-fuzz"})


def fuzz_every_operation(api_schema: Any, examples: int, headers: dict[str, str] | None = None) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10 and "/explain" in {operation.path for operation in operations}
    for operation in operations:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call_and_validate(checks=[not_a_server_error], headers=headers)
            assert headers is None or response.status_code != 401, response.text

        call()


def test_generated_pictures_never_fail_the_service(client: TestClient) -> None:
    """Random sizes, modes, bit depths and formats, whole, truncated or byte-flipped, to /classify and /reconstruct."""
    def post(path: str, data: bytes, fields: dict[str, str]) -> int:
        return client.post(path, files={"image": ("x", data)}, data=fields).status_code

    figures = image_fuzz(post, examples=60)
    assert figures["statuses"].get("/classify 200") and figures["statuses"].get("/classify 400"), figures
    assert client.get("/readyz").status_code == 200


# -- security


def _post_routes(client: TestClient) -> list[str]:
    spec = client.get("/docs.json").json()
    return [path for path, ops in spec["paths"].items() if "post" in ops]


def test_pickle_is_refused_on_every_endpoint(client: TestClient) -> None:
    routes = _post_routes(client)
    assert set(routes) == API_ROUTES
    for path in routes:
        response = client.post(path, content=b"\x80\x04\x95K\x01.", headers={"content-type": "application/vnd.bentoml+pickle"})
        assert response.status_code == 415 and "pickle" in response.json()["error"], path


@pytest.fixture
def loopback_http() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request it gets: a URL the service must never fetch."""
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PHOTO_PNG)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/picture.png", hits
    finally:
        server.shutdown()


def test_no_endpoint_reads_a_path_or_fetches_a_url(client: TestClient, tmp_path: Path,
                                                   loopback_http: tuple[str, list[str]]) -> None:
    """Every field of every POST endpoint given a URL, a server path and a file:// URL: none is followed."""
    url, hits = loopback_http
    secret = tmp_path / "secret.png"
    secret.write_bytes(PHOTO_PNG)  # a readable picture: a service that opened it would answer 200
    spec = client.get("/docs.json").json()
    values = [url, str(secret), f"file://{secret}"]
    for path, ops in spec["paths"].items():
        if "post" not in ops:
            continue
        content = ops["post"]["requestBody"]["content"]
        for media, body in content.items():
            schema = body["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
            for field, facts in schema["properties"].items():
                assert facts.get("format") not in ("uri", "url", "path"), (path, field)
                for value in values:
                    if media == "application/json":
                        response = client.post(path, json={**HEART_ROW, field: value})
                    else:
                        form = {"image": ("x.png", PHOTO_PNG), "images": ("b.npy", b"\x93NUMPY"), "model": (None, "fashion")}
                        form = {k: v for k, v in form.items() if k in schema["properties"]}
                        response = client.post(path, files={**form, field: (None, value)})
                    assert 400 <= response.status_code < 500, (path, field, value, response.text)
    assert hits == []


def test_demo_binds_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from demo import __main__ as demo_main
    from serving import ui_app

    served: dict[str, Any] = {}
    monkeypatch.setattr(ui_app, "ui_app", lambda: "the demo's app")  # the real one loads every model
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs, app=app))
    demo_main.main([])
    assert served == {"app": "the demo's app", "host": "127.0.0.1", "port": 7860, "log_level": "warning"}
    assert "http_limits" in uvicorn.config.HTTP_PROTOCOLS["auto"]  # the service's limits on request heads


@pytest.mark.parametrize("body, status, word", [
    pytest.param(json.dumps({**HEART_ROW, "pad": "x" * MAX_JSON_BYTES}), 413, "limit", id="oversized"),
    pytest.param("[" * 30_000 + "]" * 30_000, 400, "recursion", id="deeply-nested-array"),
    pytest.param('{"a":' * 10_000 + "1" + "}" * 10_000, 400, "recursion", id="deeply-nested-object"),
])
def test_oversized_and_deeply_nested_json_is_refused(client: TestClient, body: str, status: int, word: str) -> None:
    response = client.post("/heart", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == status and word in response.json()["error"], response.text


def test_a_form_sent_to_the_json_endpoint_is_refused(client: TestClient) -> None:
    """Found by schemathesis: BentoML parsed it as a form and crashed on a boundary-less one (500)."""
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"):
        response = client.post("/heart", content=json.dumps(HEART_ROW).encode(), headers={"content-type": content_type})
        assert response.status_code == 415 and "JSON" in response.json()["error"], content_type


# -- faults in the store, in-process


def test_a_truncated_model_answers_503_while_the_others_serve(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    model = latest(copy, "fashion") / MODEL_FILE
    model.write_bytes(model.read_bytes()[:1000])
    with serve(copy) as c:
        assert c.post("/classify", **image_form(PHOTO_PNG)).status_code == 503
        assert c.get("/readyz").status_code == 503 and c.get("/livez").status_code == 200
        assert c.post("/heart", json=HEART_ROW).status_code == 200


def test_a_model_missing_at_start_up_is_named_in_the_log(store: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (latest(copy, "fashion") / MODEL_FILE).unlink()
    with caplog.at_level(logging.ERROR, logger="bentoml.serving"), serve(copy) as c:
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 503
        assert c.post("/classify", **image_form(PHOTO_PNG)).status_code == 503
        assert c.post("/reconstruct", files={"image": ("x.png", PHOTO_PNG)}).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if "not serving fashion" in r.getMessage()]
    assert "FileNotFoundError" in line and "model.onnx" in line, line


def test_versions_change_under_load_without_a_failed_request(store: Path, tmp_path: Path) -> None:
    """The short version of python -m reliability faults' hot_swap_under_load (16 clients, 60 s)."""
    result = faults.hot_swap_under_load(store, tmp_path, concurrency=4, load_s=14)
    assert result["passed"], result


# -- an attacker's probe of `bentoml serve` (the long version: python -m reliability adversarial)


def test_no_file_the_demo_did_not_receive_is_read_through_it(store: Path, tmp_path: Path) -> None:
    result = adversarial.demo_files(store, tmp_path, paths=20)  # of about 90 spellings
    assert result["passed"], result


# -- signals to `bentoml serve`, and a killed training run


def test_sigterm_lets_slow_requests_finish_and_exits_0(store: Path, tmp_path: Path) -> None:
    result = faults.sigterm_in_flight(store, tmp_path, slow_requests=2)
    assert result["passed"], result


def test_a_sigkilled_worker_is_replaced_and_requests_fail_fast(store: Path, tmp_path: Path) -> None:
    result = faults.sigkill_worker(store, tmp_path, concurrency=4, before_s=1.0, after_recovery_s=1.0)
    assert result["passed"], result


def test_a_training_run_killed_while_writing_its_checkpoint_keeps_the_previous_one(
        fashion_root: Path, tmp_path: Path) -> None:
    killed = training_kills._start(fashion_root, tmp_path, phase="checkpoint", seed=3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert training_kills.check_files(tmp_path) == []
    checkpoint = tmp_path / "runs" / training_kills.EXPERIMENT / "checkpoint.pt"
    where = killed.stdout.split()
    expected = int(where[1].rstrip(",")) - 1 + ("after the rename" in killed.stdout)  # epochs saved whole
    assert (load_checkpoint(checkpoint)["epoch"] if checkpoint.exists() else 0) == expected, killed.stdout
