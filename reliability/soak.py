"""The soak: mixed traffic from wrk at concurrency 32 on loopback against `bentoml serve`, minute by minute.

    python -m reliability soak                   # 10 minutes on ./models_store (the record)
    python -m reliability soak --seconds 20      # a short one

wrk (Debian's `wrk`) runs one 60-second segment per minute with reliability/mixed.lua, so each minute has
its own latency percentiles; the service's resident memory (arbiter and workers) is sampled every 5 s.
Passes with zero errors (every answer 2xx, no socket error), memory growth under 50 MB from the end of
the first minute (warm) to the end, and the last minute's p99 within 1.5x the first minute's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .load import HEART_ROW, batch_npy, drawing_png
from .server import REPO, serve_store

CONCURRENCY, WRK_THREADS = 32, 2
MAX_GROWTH_MB = 50
MAX_P99_RATIO = 1.5
LUA = Path(__file__).with_name("mixed.lua")
BOUNDARY = "reliability-soak-boundary"


def _form(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
              f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n"
              for k, (name, data) in files.items()]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def write_requests(folder: Path, classifier: str = "fashion") -> Path:
    """The request list mixed.lua reads: one line per request kind, bodies in files beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    png, form = drawing_png(), f"multipart/form-data; boundary={BOUNDARY}"
    bodies = {
        "classify": ("POST /classify", _form({"model": classifier}, {"image": ("t.png", png)}), form),
        "classify_batch": ("POST /classify_batch", _form({"model": classifier}, {"images": ("b.npy", batch_npy())}),
                           form),
        "reconstruct": ("POST /reconstruct", _form({}, {"image": ("t.png", png)}), form),
        "heart": ("POST /heart", json.dumps(HEART_ROW).encode(), "application/json"),
        "models": ("GET /models", None, ""),
    }
    lines = []
    for name, (request, body, content_type) in bodies.items():
        if body is None:
            lines.append(f"{request} - ")
            continue
        (folder / f"{name}.body").write_bytes(body)
        lines.append(f"{request} {folder / f'{name}.body'} {content_type}")
    listing = folder / "requests.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def wrk_segment(url: str, listing: Path, seconds: int) -> dict[str, Any]:
    out = subprocess.run(["wrk", f"-t{WRK_THREADS}", f"-c{CONCURRENCY}", f"-d{seconds}s", "--timeout", "30s",
                          "-s", str(LUA), url], capture_output=True, text=True, timeout=seconds + 60,
                         env={"SOAK_REQUESTS": str(listing), "PATH": "/usr/bin:/bin"})
    line = next((l for l in out.stdout.splitlines() if l.startswith("SOAK ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out.stdout}\n{out.stderr}")
    return json.loads(line[5:])


def soak(store: Path, work: Path, seconds: int = 600, segment_s: int = 60) -> dict[str, Any]:
    """Run the soak; the result has every minute's figures and the memory samples."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk (Debian)")
    work.mkdir(parents=True, exist_ok=True)
    listing = write_requests(work / "requests")
    segments, samples = [], []
    with serve_store(store, work / "soak.log") as server:
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((round(time.monotonic() - started, 1), server.rss_bytes()))
                stop.wait(5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rss_ready = server.rss_bytes()
        remaining = seconds
        while remaining > 0:
            length = min(segment_s, remaining)
            segment = wrk_segment(server.url, listing, length)
            segment["rss_mb_at_end"] = round(server.rss_bytes() / 2 ** 20, 1)
            segments.append(segment)
            print(json.dumps(segment), flush=True)
            remaining -= length
        stop.set()
        sampler.join()
        worker_alive = bool(server.workers())
        traceback_lines = server.log.read_text().count("Traceback")
    first, last = segments[0], segments[-1]
    growth = last["rss_mb_at_end"] - first["rss_mb_at_end"]
    totals = {k: sum(s[k] for s in segments) for k in ("requests", "ok", "4xx", "5xx", "connect", "read", "write",
                                                        "timeout", "non_2xx")}
    errors = totals["requests"] - totals["ok"] + totals["connect"] + totals["read"] + totals["write"] + totals["timeout"]
    ratio = last["p99_ms"] / first["p99_ms"] if first["p99_ms"] else float("inf")
    problems = []
    if errors:
        problems.append(f"{errors} errors: {totals}")
    if growth >= MAX_GROWTH_MB:
        problems.append(f"resident memory grew {growth:.1f} MB after the first minute")
    if len(segments) > 1 and ratio > MAX_P99_RATIO:
        problems.append(f"p99 went from {first['p99_ms']} ms to {last['p99_ms']} ms")
    if not worker_alive or traceback_lines:
        problems.append(f"worker alive {worker_alive}, {traceback_lines} tracebacks in the log")
    return {"check": "soak", "passed": not problems, "problems": problems,
            "figures": {"seconds": seconds, "concurrency": CONCURRENCY, **totals, "errors": errors,
                        "requests_per_s": round(totals["requests"] / max(1, sum(s["duration_s"] for s in segments)), 1),
                        "rss_mb_ready": round(rss_ready / 2 ** 20, 1),
                        "rss_mb_after_first_minute": first["rss_mb_at_end"], "rss_mb_end": last["rss_mb_at_end"],
                        "rss_growth_mb": round(growth, 1), "rss_growth_from_ready_mb":
                            round(last["rss_mb_at_end"] - rss_ready / 2 ** 20, 1),
                        "p99_first_ms": first["p99_ms"], "p99_last_ms": last["p99_ms"], "p99_ratio": round(ratio, 2),
                        "p50_first_ms": first["p50_ms"], "p50_last_ms": last["p50_ms"]},
            "minutes": segments, "rss_samples": samples}


DEFAULT_STORE = REPO / "models_store"
