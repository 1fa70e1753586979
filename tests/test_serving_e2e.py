"""The service as users run it: `bentoml serve` in a subprocess called with bentoml.SyncHTTPClient, and `bentoml build`."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image

from bench.gpu import gpu_packages
from bench.serve import multipart
from reliability.server import BENTOML, QUIET, REPO, START_TIMEOUT_S, Server
from serving_store import HEART_ROW, build_store, expected_provider
from training.store import MODEL_FILE, STORE_ENV, latest


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.getbasetemp() / "serving")  # shared with test_serving.py


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(["serving.service:ModelService"], REPO, {STORE_ENV: str(store)},
                     tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_bentoml_serve_answers_every_endpoint(server: Server, tmp_path: Path) -> None:
    image = tmp_path / "drawing.png"
    Image.new("L", (280, 280), 255).save(image)
    batch = tmp_path / "batch.npy"
    np.save(batch, np.zeros((5, 1, 28, 28), np.uint8))

    with bentoml.SyncHTTPClient(server.url, server_ready_timeout=START_TIMEOUT_S) as client:
        assert client.is_ready()
        answer = client.classify(image=image, model="fashion", top_k=2)
        assert answer["model"] == "fashion" and len(answer["top"]) == 2
        assert client.classify_batch(images=batch, model="fashion")["count"] == 5
        assert client.reconstruct(image=image).size == (28, 28)
        assert client.heart(HEART_ROW)["label"] in ("Normal", "HeartDisease")
        with pytest.raises(bentoml.exceptions.NotFound, match="unknown model"):
            client.classify(image=image, model="digits")

    models = httpx.get(server.url + "/models").json()
    assert models["ready"] and sorted(models["models"]) == ["fashion", "fashion_reconstruction", "heart"]
    assert httpx.get(server.url + "/livez").status_code == 200


def test_bentoml_serve_mounts_the_demo_over_the_same_store(server: Server) -> None:
    page = httpx.get(server.url + "/ui/", timeout=30)
    assert page.status_code == 200 and "classic-dl demo" in page.text, page.text[:500]
    endpoints = httpx.get(server.url + "/ui/gradio_api/info", timeout=30).json()["named_endpoints"]
    assert {"/classify_drawing", "/classify_upload", "/reconstruct_upload", "/heart"} <= set(endpoints)


def at_once(url: str, path: str, body: bytes, content_type: str, clients: int) -> list[int]:
    """The status of `clients` POSTs sent together: every connection is opened first, then every request
    written before any answer is read. (Client threads would send them one after another: a small digit
    is answered in about a millisecond, before the next thread gets to write.)"""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    connections = [socket.create_connection((host, port), timeout=60) for _ in range(clients)]
    try:
        for connection in connections:
            connection.sendall(request)
        answers = []
        for connection in connections:
            with connection.makefile("rb") as answer:
                answers.append(int(answer.readline().split()[1]))
        return answers
    finally:
        for connection in connections:
            connection.close()


def test_bentoml_serve_batches_concurrent_requests_and_survives_bad_input(server: Server, store: Path) -> None:
    png = io.BytesIO()
    Image.new("L", (28, 28)).save(png, format="PNG")
    statuses = at_once(server.url, "/classify", *multipart("image", "x.png", png.getvalue(), "image/png",
                                                           model="fashion"), clients=32)
    assert statuses == [200] * 32, f"{statuses}\n{server.log.read_text()[-4000:]}"
    bad = httpx.post(server.url + "/heart", content=b"\x80\x04K\x01.",
                     headers={"content-type": "application/vnd.bentoml+pickle"})
    assert bad.status_code == 415 and "pickle" in bad.json()["error"]
    assert httpx.post(server.url + "/classify", files={"image": ("x.png", b"junk")},
                      data={"model": "fashion"}).status_code == 400

    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in httpx.get(server.url + "/metrics").text
               .splitlines() if line.startswith("classify_onnx_batch_size")}
    calls = metrics['classify_onnx_batch_size_count{model="fashion"}']
    assert metrics['classify_onnx_batch_size_sum{model="fashion"}'] >= 32  # every image went through a batch
    assert calls < 32, f"concurrent requests should share ONNX Runtime calls: {metrics}"
    assert httpx.get(server.url + "/readyz").status_code == 200
    log = server.log.read_text()
    assert f"serving fashion v1 on {expected_provider(store)}" in log
    assert "Traceback" not in log and "Failed to create CUDAExecutionProvider" not in log, log[-4000:]


def test_made_up_paths_add_no_metric_series(server: Server) -> None:
    """BentoML labels its request metrics with the path: made-up paths would each add series until a restart."""
    for i in range(20):
        assert httpx.get(f"{server.url}/made-up-{i}-{'x' * 2000}").status_code == 404
        httpx.get(f"{server.url}/ui/gradio_api/made-up-{i}")
    metrics = httpx.get(server.url + "/metrics").text
    assert "made-up" not in metrics and len(metrics) < 500_000
    assert 'endpoint="other"' in metrics and 'endpoint="/ui"' in metrics, metrics[-3000:]


def test_metrics_per_model_and_version_with_the_test_splits_reference(server: Server, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("L", (28, 28)).save(png, format="PNG")
    for model in ("fashion", "fashion@v1", "made-up-model", "fashion@v99"):
        httpx.post(server.url + "/classify", files={"image": ("x.png", png.getvalue())}, data={"model": model})
    httpx.post(server.url + "/heart", json=HEART_ROW)
    metrics = httpx.get(server.url + "/metrics").text
    for series in ('model_request_seconds_count{endpoint="/classify",model="fashion",version="v1"}',
                   'model_request_seconds_count{endpoint="/heart",model="heart",version="v1"}',
                   'model_top1_probability_count{model="fashion",version="v1"}',
                   'model_prepare_seconds_count{model="fashion",version="v1"}',
                   'model_test_top1_mean{model="fashion",version="v1"}', 'model_test_label_share{label="Trouser"',
                   'model_answers_total{label=', 'model_live_version{'):
        assert series in metrics, series
    assert "made-up" not in metrics and "v99" not in metrics  # a name not in the store adds no series


def test_each_server_has_its_own_prometheus_folder(server: Server) -> None:
    """BentoML's default is one folder under $BENTOML_HOME, emptied by every server that starts."""
    (worker,) = server.workers()
    folder = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"])
    assert folder.name == f"bentoml-prometheus-{server.process.pid}" and any(folder.iterdir())


def test_bentoml_build_packs_a_bento_that_serves_the_store_offline(store: Path, tmp_path: Path) -> None:
    """Build from a copy of the project with the tiny store, with no network, then serve the Bento."""
    project = tmp_path / "project"
    for package in ("serving", "training", "demo"):
        shutil.copytree(REPO / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(store, project / "models_store")
    shutil.copy(REPO / "bentofile.yaml", project)
    home = tmp_path / "bentoml-home"
    no_network = {"BENTOML_HOME": str(home), "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                  "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}
    built = subprocess.run([BENTOML, "build", "--output", "tag"], cwd=project, capture_output=True, text=True,
                           env={**os.environ, **QUIET, **no_network}, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    src = home / "bentos" / name / version / "src"
    packed = latest(src / "models_store", "fashion") / MODEL_FILE
    assert packed.read_bytes() == (latest(store, "fashion") / MODEL_FILE).read_bytes()
    assert not (src / "training" / "run.py").exists()  # only the torch-free modules travel
    bento_yaml = (home / "bentos" / name / version / "bento.yaml").read_text()
    assert "BENTOML_HOST" in bento_yaml and "0.0.0.0" in bento_yaml  # a container listens beyond its loopback
    requirements = (home / "bentos" / name / version / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "torch" not in requirements
    assert {f"{name}=={version}" for name, version in gpu_packages().items()} <= set(requirements.split())  # CUDA, cuDNN

    elsewhere = tmp_path / "elsewhere"  # not the project: the Bento must hold every module it imports
    elsewhere.mkdir()
    bento = Server([tag], elsewhere, {"BENTOML_HOME": str(home)}, tmp_path / "bento.log")
    try:
        bento.wait_ready()
        assert sorted(httpx.get(bento.url + "/models").json()["models"]) == [
            "fashion", "fashion_reconstruction", "heart"]
        assert httpx.get(bento.url + "/ui/", timeout=30).status_code == 200
    finally:
        bento.stop()
