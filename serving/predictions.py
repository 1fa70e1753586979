"""The prediction log: one JSON line per answer, off by default, written without slowing requests.

    SERVING_PREDICTION_LOG=/var/log/classic-dl bentoml serve serving.service:ModelService

Each worker writes <dir>/predictions-<pid>.jsonl: time, model, version, label, top probability, endpoint,
input format and size, latency, request id; with SERVING_PREDICTION_LOG_INPUTS=1 also the prepared input
the model saw (uint8, base64), never the upload itself. A request hands its record to a bounded queue and
goes on; a writer thread appends it. Files rotate at FILE_BYTES and at most KEEP_FILES are kept per worker,
so the log never holds more than about FILE_BYTES x KEEP_FILES per worker. A full queue drops records, a
failed write (full disk, no permission) skips them: both are counted in /metrics and logged once; requests
are answered either way. `python -m serving.drift DIR` summarises a log against the manifests' test split.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import prometheus_client

log = logging.getLogger("bentoml.serving")

DIR_ENV, INPUTS_ENV = "SERVING_PREDICTION_LOG", "SERVING_PREDICTION_LOG_INPUTS"
FILE_BYTES = 16 * 1024 * 1024  # a file is rotated past this
KEEP_FILES = 8                 # files kept per worker, the current one included
QUEUE_RECORDS = 10_000         # records waiting for the writer at most; past it they are dropped
LOST = prometheus_client.Counter("prediction_log_lost_total", "prediction log records not written",
                                 ["reason"])  # queue_full | write_failed


class PredictionLog:
    """Records answers to `folder` from a writer thread of its own."""

    def __init__(self, folder: Path, with_inputs: bool = False, file_bytes: int = FILE_BYTES,
                 keep_files: int = KEEP_FILES):
        self.folder, self.with_inputs = Path(folder), with_inputs
        self.file_bytes, self.keep_files = file_bytes, keep_files
        self.path = self.folder / f"predictions-{os.getpid()}.jsonl"
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_RECORDS)
        self.failing = False  # said once in the log, until a write succeeds again
        self.thread = threading.Thread(target=self._write_all, name="prediction-log", daemon=True)
        self.thread.start()

    @classmethod
    def from_env(cls) -> "PredictionLog | None":
        folder = os.environ.get(DIR_ENV)
        return cls(Path(folder), os.environ.get(INPUTS_ENV) == "1") if folder else None

    def record(self, **fields: Any) -> None:
        """Hand one answer's record over; never blocks, never raises."""
        fields["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        try:
            self.queue.put_nowait(fields)
        except queue.Full:
            LOST.labels("queue_full").inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        self.queue.put(None)
        self.thread.join(timeout_s)

    def _write_all(self) -> None:
        while (record := self.queue.get()) is not None:
            batch = [record]
            while len(batch) < 1000:  # whatever else is waiting goes in the same write
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(batch)
                    return
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Append `batch`, rotating whenever the next line would take the file past file_bytes."""
        encoded = [(json.dumps(r, separators=(",", ":")) + "\n").encode("utf-8") for r in batch]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            out = open(self.path, "ab")
            try:
                for line in encoded:
                    if size and size + len(line) > self.file_bytes:
                        out.close()
                        self._rotate()
                        out, size = open(self.path, "ab"), 0
                    out.write(line)
                    size += len(line)
            finally:
                out.close()
        except OSError as err:
            LOST.labels("write_failed").inc(len(batch))
            if not self.failing:
                log.error("the prediction log cannot be written (%s): requests are answered, records lost", err)
                self.failing = True
            return
        if self.failing:
            log.info("the prediction log is written again (%s)", self.path)
            self.failing = False

    def _rotate(self) -> None:
        """predictions-PID.jsonl -> .1.jsonl -> .2.jsonl ..., the oldest past keep_files deleted."""
        name = self.path.name.removesuffix(".jsonl")
        numbered = lambda n: self.path.with_name(f"{name}.{n}.jsonl")  # noqa: E731
        numbered(self.keep_files - 1).unlink(missing_ok=True)
        for n in range(self.keep_files - 2, 0, -1):
            if numbered(n).exists():
                os.replace(numbered(n), numbered(n + 1))
        os.replace(self.path, numbered(1))


_FORMATS = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"\x93NUMPY", "npy"))


def input_format(data: bytes | None) -> str:
    """What an upload is, from its first bytes (the API checks it properly; this only labels the record)."""
    if data is None:
        return "json"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in _FORMATS if data.startswith(magic)), "other")


def record_answer(log_: PredictionLog, endpoint: str, answer: dict[str, Any], upload: bytes | None,
                  request_id: str, seconds: float, seen: list[np.ndarray] | None = None) -> None:
    """One record per answer of `answer` (a /classify_batch answer holds one per image)."""
    common = {"endpoint": endpoint, "model": answer.get("model"), "version": answer.get("version"),
              "input_format": input_format(upload), "input_bytes": len(upload) if upload is not None else None,
              "latency_ms": round(seconds * 1000, 2), "request_id": request_id}
    if "results" in answer:  # a batch: one record per image, in order
        for index, result in enumerate(answer["results"]):
            log_.record(**common, index=index, label=result["label"], probability=result["top"][0]["probability"])
        return
    if "top" in answer:
        probability = answer["top"][0]["probability"]
    else:  # a table model answers one probability, of its second label: its confidence is the larger side
        probability = max(answer["probability"], 1 - answer["probability"])
    extra = {}
    if log_.with_inputs and seen:
        pixels = np.round(np.clip(seen[0], 0, 1) * 255).astype(np.uint8)
        extra = {"input_shape": list(pixels.shape), "input_uint8_base64": base64.b64encode(pixels.tobytes()).decode()}
    log_.record(**common, label=answer["label"], probability=probability, **extra)
