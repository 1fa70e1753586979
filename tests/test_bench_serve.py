"""bench.serve's pieces, untimed and without wrk: the comparison servers answer, the report renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from bench.ceiling_service import CeilingService
from bench.naive_app import create_app, torch_model_from_store
from bench.serve import (BATCH_IMAGES, DIGIT_PNG, MODEL, ORT, RATIOS, multipart, ratios, render_ratios, report,
                         scenarios, servers, summarise)
from serving.runtime import load_models
from serving.service import ModelService

STORE = Path(__file__).resolve().parents[1] / "models_store"  # the committed digits model


@pytest.fixture(scope="module")
def digit_form() -> dict:
    body, content_type = multipart("image", "digit.png", DIGIT_PNG.read_bytes(), "image/png", model=MODEL)
    return {"content": body, "headers": {"Content-Type": content_type}}


@pytest.fixture(scope="module")
def ceiling() -> Iterator[TestClient]:
    # One app per process may register BentoML's request metrics (prometheus' global registry).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_CONFIG_OVERRIDES",
                  json.dumps({"services": {"classify-ceiling": {"metrics": {"enabled": False}}}}))
        with TestClient(CeilingService.to_asgi()) as client:
            yield client


@pytest.mark.parametrize("path", ["/classify", "/classify_dict"])
def test_ceiling_answers_the_service_form(ceiling: TestClient, digit_form: dict, path: str) -> None:
    answer = ceiling.post(path, **digit_form)
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "7"


def test_naive_app_classifies_a_test_digit(digit_form: dict) -> None:
    with TestClient(create_app(STORE)) as client:
        answer = client.post("/classify", **digit_form)
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "7" and len(answer.json()["top"]) == 3


def test_naive_model_is_the_served_model() -> None:
    """The PyTorch module rebuilt from the manifest with the ONNX weights answers as ONNX Runtime does."""
    net, _ = torch_model_from_store(STORE)
    pixels = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        ours = torch.softmax(net(torch.from_numpy(pixels)), dim=1).numpy()
    np.testing.assert_allclose(ours, load_models(STORE).probabilities(MODEL, pixels), atol=1e-5)


def fake_rounds(names: list[str], rounds: int = 3) -> list[list[dict]]:
    plan = scenarios(names, [1, 32], 1)
    made = []
    for k in range(rounds):
        made.append([{"label": s.label, "server": s.server, "path": s.path, "concurrency": s.concurrency,
                      "images": s.images, "requests_per_s": 100.0 + i + k, "images_per_s": (100.0 + i + k) * s.images,
                      "p50_ms": 5.0, "p99_ms": 20.0 + i, "non_2xx": 0, "socket_errors": 0,
                      "peak_rss_mib": None if s.server == ORT else 500.0 + k} for i, s in enumerate(plan)])
    return made


def test_report_renders_fake_numbers() -> None:
    names = ["ours", "ceiling", "naive", "naive_1t"]
    rounds = fake_rounds(names)
    rows = summarise(rounds)
    assert len(rows) == len(scenarios(names, [1, 32], 1))
    found = ratios(rounds, 32)
    assert set(found) == set(RATIOS) - {"classify_vs_before", "batch_vs_before",  # no --before server
                                        "classify_workers_vs_one", "batch_workers_vs_one",  # nor --workers
                                        "classify_with_explain_vs_alone", "p99_with_explain_vs_alone"}  # --explain
    assert all(value > 0 for value in found.values())
    text = report({"date": "2026-01-01T00:00:00+00:00", "machine": "test CPU, 2 cores (CPU)",
                   "provider": "CPUExecutionProvider", "command": "python -m bench.serve", "batch_source": "fake",
                   "duration_s": 1, "rounds": rounds, "rows": rows, "ratios": found})
    assert f"batch {BATCH_IMAGES}" in text and "| 500 |" not in text and "| 502 |" in text  # peak over rounds
    assert "errors (non-2xx + socket), every row and round | 0 | 0 | yes" in text


def test_missed_target_says_no() -> None:
    text = render_ratios({"batch_vs_ort": 0.3}, errors=2, top_concurrency=32)
    assert "| 0.30x | >= 0.5x | NO |" in text and "| 2 | 0 | NO |" in text


def test_workers_server_is_ours_with_more_workers(tmp_path: Path) -> None:
    plain = servers(tmp_path, "cpu", None)
    running = servers(tmp_path, "cpu", None, workers=3)
    assert "workers" not in plain and set(running) == set(plain) | {"workers"}
    ours, more = running["ours"], running["workers"]
    assert more.argv[:-1] == ours.argv[:-1] and more.port != ours.port  # same command, its own --port
    overrides = json.loads(more.env["BENTOML_CONFIG_OVERRIDES"])
    assert overrides == {"services": {ModelService.name: {"workers": 3}}}
    assert "BENTOML_CONFIG_OVERRIDES" not in ours.env


def test_workers_rows_and_ratios() -> None:
    names = ["ours", "workers", "ceiling", "naive", "naive_1t"]
    plan = scenarios(names, [1, 32], 1)
    assert [(s.server, s.path) for s in plan if s.body == "batch"] == [("ours", "/classify_batch"),
                                                                      ("workers", "/classify_batch")]
    found = ratios(fake_rounds(names), 32)
    assert {"classify_workers_vs_one", "batch_workers_vs_one"} <= set(found)
    assert "ours, --workers N /classify (c32) / ours /classify (c32)" in render_ratios(found, 0, 32)
