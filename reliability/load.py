"""Steady concurrent traffic from Python threads, every request's outcome kept (for the fault checks).

The soak uses wrk (reliability/soak.py); the fault checks need to know what happened to each request
around a kill or a publish, so they send their own: `with Load(url, concurrency=8) as load: ...`.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import numpy as np
from PIL import Image

HEART_ROW = {"Age": 54, "Sex": "M", "ChestPainType": "ASY", "RestingBP": 140, "Cholesterol": 239, "FastingBS": 0,
             "RestingECG": "Normal", "MaxHR": 160, "ExerciseAngina": "N", "Oldpeak": 1.2, "ST_Slope": "Up"}
REQUEST_TIMEOUT_S = 60  # the service's own request timeout


def drawing_png(size: tuple[int, int] = (280, 280)) -> bytes:
    """Trousers drawn dark on white, as in docs/SERVING.md: a /classify and /reconstruct upload."""
    img = Image.new("L", size, 255)
    w, h = size
    img.paste(0, (w // 3, h // 14, 2 * w // 3, h // 4))
    img.paste(0, (w // 3, h // 14, w // 2 - 2, 13 * h // 14))
    img.paste(0, (w // 2 + 2, h // 14, 2 * w // 3, 13 * h // 14))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def batch_npy(count: int = 16) -> bytes:
    """(count, 1, 28, 28) uint8 images in training form, for /classify_batch on fashion."""
    out = io.BytesIO()
    np.save(out, np.random.default_rng(0).integers(0, 256, (count, 1, 28, 28), dtype=np.uint8))
    return out.getvalue()


@dataclass(frozen=True)
class Call:
    """One kind of request: how to send it, and where its answer names the model version."""

    endpoint: str
    send: Callable[[httpx.Client], httpx.Response]

    def version(self, response: httpx.Response) -> str | None:
        if self.endpoint == "/reconstruct":
            return response.headers.get("x-model-version")
        if self.endpoint in ("/classify", "/classify_batch", "/heart"):
            return response.json().get("version")
        return None


def mixed_calls(classifier: str = "fashion") -> list[Call]:
    """classify, classify_batch, reconstruct, heart and models, in the soak's proportions (one each)."""
    png, npy = drawing_png(), batch_npy()
    return [
        Call("/classify", lambda c: c.post("/classify", files={"image": ("t.png", png)}, data={"model": classifier})),
        Call("/classify_batch", lambda c: c.post("/classify_batch", files={"images": ("b.npy", npy)},
                                                 data={"model": classifier})),
        Call("/reconstruct", lambda c: c.post("/reconstruct", files={"image": ("t.png", png)})),
        Call("/heart", lambda c: c.post("/heart", content=json.dumps(HEART_ROW),
                                        headers={"content-type": "application/json"})),
        Call("/models", lambda c: c.get("/models")),
    ]


@dataclass
class Outcome:
    endpoint: str
    start: float            # time.monotonic()
    end: float
    status: int | None      # None: no HTTP answer (connection refused, reset, timeout)
    error: str | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class Load:
    """`concurrency` threads sending `calls` in rotation until the block ends; `outcomes` in completion order."""

    def __init__(self, url: str, calls: list[Call] | None = None, concurrency: int = 8):
        self.url, self.calls, self.concurrency = url, calls or mixed_calls(), concurrency
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]

    def _run(self, offset: int) -> None:
        i = offset
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.is_set():
                call = self.calls[i % len(self.calls)]
                i += 1
                start = time.monotonic()
                try:
                    response = call.send(client)
                    outcome = Outcome(call.endpoint, start, time.monotonic(), response.status_code)
                    if response.status_code == 200:
                        outcome.version = call.version(response)
                    else:
                        outcome.error = response.text[:200]
                except httpx.HTTPError as err:
                    outcome = Outcome(call.endpoint, start, time.monotonic(), None, f"{type(err).__name__}: {err}")
                    time.sleep(0.05)  # a refused connection returns at once: do not spin
                self.outcomes.append(outcome)

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 5)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]
