"""The prediction log (serving.predictions) and its drift report (serving.drift)."""

from __future__ import annotations

import json
import logging
import queue
import time
from pathlib import Path

import numpy as np
import pytest

from serving import drift, predictions
from serving.predictions import PredictionLog
from serving_store import HEART_ROW, build_store
from test_serving import PHOTO_PNG, batch_form, image_form, npy, serve
from training.store import latest, read_manifest


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def wait_for(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_records_rotate_and_the_log_stays_bounded(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, file_bytes=2000, keep_files=3)
    for i in range(200):
        log.record(model="fashion", version="v1", label="Trouser", probability=0.9, index=i)
    log.close()
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) == 3 and all(f.stat().st_size <= 2000 for f in files)
    kept = lines(tmp_path)
    assert kept and kept[-1]["index"] == 199 and "time" in kept[-1]  # the newest are kept, whole


def test_a_full_queue_drops_records_without_blocking(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.close()  # no writer any more: the queue only fills
    log.queue = queue.Queue(1)
    before = predictions.LOST.labels("queue_full")._value.get()
    started = time.monotonic()
    for _ in range(5):
        log.record(model="m", version="v1")
    assert time.monotonic() - started < 1 and predictions.LOST.labels("queue_full")._value.get() == before + 4


def test_a_log_that_cannot_be_written_loses_records_and_says_so_once(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log's folder should be")
    before = predictions.LOST.labels("write_failed")._value.get()
    with caplog.at_level(logging.ERROR, logger="bentoml.serving"):
        log = PredictionLog(blocked)
        for _ in range(3):
            log.record(model="m", version="v1")
            time.sleep(0.05)
        log.close()
    assert predictions.LOST.labels("write_failed")._value.get() == before + 3
    assert caplog.text.count("cannot be written") == 1


@pytest.mark.slow  # trains the tests' store
def test_the_service_logs_each_answer_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    store = build_store(tmp_path_factory.getbasetemp() / "serving")
    monkeypatch.setenv(predictions.DIR_ENV, str(tmp_path / "log"))
    monkeypatch.setenv(predictions.INPUTS_ENV, "1")
    with serve(store) as client:
        answer = client.post("/classify", **image_form(PHOTO_PNG))
        assert client.post("/classify_batch", **batch_form(npy(np.zeros((3, 1, 28, 28), np.uint8)))).is_success
        assert client.post("/heart", json=HEART_ROW).is_success
        assert client.post("/classify", **image_form(PHOTO_PNG, model="made-up")).status_code == 404
        wait_for(lambda: len(lines(tmp_path / "log")) >= 5)
    records = lines(tmp_path / "log")
    assert [r["endpoint"] for r in records] == ["/classify", *["/classify_batch"] * 3, "/heart"]
    first = records[0]
    assert first["request_id"] == answer.headers["x-request-id"] and first["label"] == answer.json()["label"]
    assert (first["model"], first["version"], first["input_format"]) == ("fashion", "v1", "png")
    assert first["input_bytes"] == len(PHOTO_PNG) and first["latency_ms"] > 0
    assert first["input_shape"] == [1, 28, 28] and len(first["input_uint8_base64"]) > 0  # asked for
    assert [r["index"] for r in records[1:4]] == [0, 1, 2] and records[4]["input_format"] == "json"
    assert "made-up" not in json.dumps(records)


@pytest.mark.slow  # trains the tests' store
def test_the_drift_report_sets_the_log_against_the_test_split(tmp_path_factory: pytest.TempPathFactory,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = build_store(tmp_path_factory.getbasetemp() / "serving")
    profile = read_manifest(latest(store, "fashion"))["metrics"]["answers"]
    usual = max(profile["label_share"], key=profile["label_share"].get)
    log = PredictionLog(tmp_path)
    for _ in range(50):  # every answer the same label, unsure: far from the test split
        log.record(model="fashion", version="v1", label=usual + "-not", probability=0.01)
    log.close()
    with open(next(tmp_path.glob("*.jsonl")), "a") as torn:
        torn.write('{"model": "fash')  # a worker killed mid-line
    assert drift.main([str(tmp_path), "--store", str(store)]) == 0
    text = capsys.readouterr().out
    assert "| fashion | v1 | 50 |" in text and "mean confidence 1.0%" in text and "answered 100% of the time" in text
    assert drift.main([str(tmp_path / "missing")]) == 1
