"""Serving throughput: our service against the framework ceiling, a naive FastAPI + PyTorch app and ORT in-process.

    python -m bench.serve [--duration 10] [--rounds 3] [--concurrency 1 8 32] [--data-root data]
                          [--provider cpu|cuda] [--before CHECKOUT] [--workers N] [--explain] [--out runs/bench_serve]

Starts the servers side by side, one worker each unless said otherwise: serving.service over
models_store/, bench.ceiling_service (BentoML, decode only, constant answer), bench.naive_app (FastAPI +
PyTorch eager, one request at a time) with PyTorch's default threads and with one thread; with --before
the serving.service of another checkout (e.g. `git worktree add /tmp/before HEAD~1`) to measure a
change, and with --workers N serving.service again, run by N BentoML workers. wrk (Debian's `wrk`,
bench/multipart.lua) posts one MNIST test digit as a PNG per request to each /classify at every
concurrency, and 256 test digits as an .npy to /classify_batch; ONNX Runtime's session.run on batches
of 1 and 256 in this process is the compute ceiling. With --explain, our service also answers /explain
for the same digit alone, and /classify at the highest concurrency while /explain is loaded beside it
(both wrk runs at once), to show what the maps cost /classify. Every round runs every
scenario once, so drift hits all alike; ratios are taken within a round and their median reported.
Writes results.json and results.md to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import psutil

from serving.loading import create_session
from training.provenance import hardware, utc_now
from training.store import MODEL_FILE, latest

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = ROOT / "bench" / "multipart.lua"
DIGIT_PNG = ROOT / "demo" / "examples" / "mnist" / "7-00000.png"  # MNIST test image 0, a 7
DEMO_DIGITS = ROOT / "demo" / "examples" / "mnist"  # ten MNIST test digits: the batch when no data root has MNIST
MODEL = "digits"
BATCH_IMAGES = 256            # images per /classify_batch request and per in-process ORT batch call
BOUNDARY = "benchserveboundary7MA4YWxkTrZu0gW"
WARMUP_S = 2                  # untimed wrk run per scenario before the rounds (JIT-free, but pools and caches)
WRK_TIMEOUT = "10s"           # a request slower than this counts as a socket error (timeout)
READY_TIMEOUT_S = 120         # a server that does not answer by then fails the benchmark
RSS_INTERVAL_S = 0.1          # how often the server process tree's memory is sampled
ORT = "ort"                   # the Scenario.server of ONNX Runtime in this process
EXPLAIN_CONCURRENCY = 2       # /explain connections (--explain): as many as the service's threads for such work
FIGURES = {"requests_per_s": "requests/s", "images_per_s": "images/s", "p99_ms": "p99 latency"}
# name: (numerator, denominator, figure, target from issue 6 or None); a side is (server, path), /classify
# at the highest concurrency. A ratio whose server was not run (--before) is left out.
RATIOS = {
    "classify_vs_ceiling": (("ours", "/classify"), ("ceiling", "/classify"), "requests_per_s", (">=", 0.8)),
    "classify_vs_naive": (("ours", "/classify"), ("naive", "/classify"), "requests_per_s", (">=", 1.0)),
    "p99_vs_naive": (("ours", "/classify"), ("naive", "/classify"), "p99_ms", ("<=", 1.0)),
    "batch_vs_ort": (("ours", "/classify_batch"), (ORT, f"batch {BATCH_IMAGES}"), "images_per_s", (">=", 0.5)),
    "classify_vs_ceiling_dict": (("ours", "/classify"), ("ceiling", "/classify_dict"), "requests_per_s", None),
    "classify_vs_naive_1t": (("ours", "/classify"), ("naive_1t", "/classify"), "requests_per_s", None),
    "p99_vs_naive_1t": (("ours", "/classify"), ("naive_1t", "/classify"), "p99_ms", None),
    "classify_vs_before": (("ours", "/classify"), ("before", "/classify"), "requests_per_s", None),
    "batch_vs_before": (("ours", "/classify_batch"), ("before", "/classify_batch"), "images_per_s", None),
    "classify_workers_vs_one": (("workers", "/classify"), ("ours", "/classify"), "requests_per_s", None),
    "batch_workers_vs_one": (("workers", "/classify_batch"), ("ours", "/classify_batch"), "images_per_s", None),
    # a third element: the endpoint loaded beside it (--explain)
    "classify_with_explain_vs_alone": (("ours", "/classify", "/explain"), ("ours", "/classify"), "requests_per_s", None),
    "p99_with_explain_vs_alone": (("ours", "/classify", "/explain"), ("ours", "/classify"), "p99_ms", None),
}
OURS = ("ours", "before", "workers")  # the servers running serving.service: they also answer /classify_batch


# -- request bodies


def multipart(file_field: str, filename: str, data: bytes, content_type: str, **fields: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part and text parts, and its Content-Type header."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
             f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"]
    parts += [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
              for k, v in fields.items()]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def test_digits(data_root: Path, count: int) -> tuple[np.ndarray, str]:
    """(count, 1, 28, 28) uint8 MNIST test digits and where they came from."""
    if (data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        from training.data import load_mnist  # torchvision: only imported when the data is there
        return load_mnist(data_root).test.images[:count].numpy(), f"the first {count} MNIST test images"
    from PIL import Image
    digits = np.stack([np.asarray(Image.open(p))[None] for p in sorted(DEMO_DIGITS.glob("*.png"))])
    return np.resize(digits, (count, *digits.shape[1:])), f"the {len(digits)} MNIST test digits of {DEMO_DIGITS.relative_to(ROOT)}, repeated"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# -- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One HTTP server under test, started from the repository root; its log goes to `log`."""

    name: str
    argv: list[str]
    ready_path: str
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env}, start_new_session=True)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # its own session: the BentoML workers go with it
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


# Who answers /classify, by Server name: the row titles of the table.
TITLES = {"ours": "ours", "before": "ours before (--before)", "workers": "ours, --workers N",
          "ceiling": "framework ceiling (BentoML, decode only)", "naive": "naive FastAPI + PyTorch", "naive_1t": "naive, 1 torch thread",
          ORT: "ONNX Runtime session.run in-process,"}


def servers(out: Path, provider: str, before: Path | None, workers: int = 0) -> dict[str, Server]:
    """Every server to measure, each on a free port (not started)."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    ours = [bentoml, "serve", "serving.service:ModelService"]
    naive = [sys.executable, "-m", "uvicorn", "bench.naive_app:create_app", "--factory", "--log-level", "warning"]
    env = {"CUDA_VISIBLE_DEVICES": ""} if provider == "cpu" else {"NAIVE_DEVICE": "cuda"}
    plan = [("ours", ours, "/readyz", {}, ROOT),
            ("ceiling", [bentoml, "serve", "bench.ceiling_service:CeilingService"], "/readyz", {}, ROOT),
            ("naive", naive, "/openapi.json", {}, ROOT),
            ("naive_1t", naive, "/openapi.json", {"NAIVE_THREADS": "1"}, ROOT)]
    if before is not None:
        plan.insert(1, ("before", ours, "/readyz", {}, before.resolve()))
    if workers:
        overrides = json.dumps({"services": {"classic-dl": {"workers": workers}}})
        plan.insert(1, ("workers", ours, "/readyz", {"BENTOML_CONFIG_OVERRIDES": overrides}, ROOT))
    made = {}
    for name, argv, ready, extra_env, cwd in plan:
        port = free_port()
        made[name] = Server(name, [*argv, "--port", str(port)], ready, port, out / f"{name}.log",
                            {**env, **extra_env}, cwd)
    return made


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (shared pages counted in each)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@contextmanager
def peak_rss(pid: int | None) -> Iterator[list[int]]:
    """Samples the process tree's RSS while the block runs; the peak in bytes is left in the yielded list."""
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(pid))
            stop.wait(RSS_INTERVAL_S)

    thread = threading.Thread(target=sample, daemon=True) if pid else None
    if thread:
        thread.start()
    try:
        yield peak
    finally:
        stop.set()
        if thread:
            thread.join()


# -- load


@dataclass(frozen=True)
class Scenario:
    """One row of the table: who is measured, how, at what concurrency."""

    label: str
    server: str               # a Server name, or ORT for ONNX Runtime in this process
    path: str = "/classify"   # for ORT: "batch N"
    body: str = "digit"       # which request body: "digit" (one PNG) or "batch" (an .npy)
    concurrency: int = 1
    images: int = 1           # images per request (or per session.run call)
    beside: str | None = None  # an endpoint loaded at the same time, with the same body, EXPLAIN_CONCURRENCY connections


def run_wrk(url: str, body: Path, content_type: str, concurrency: int, duration_s: float) -> dict[str, float]:
    """wrk's summary for `duration_s` of closed-loop load: requests, p50/p99 in µs, error counts."""
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s:g}s", "--timeout", WRK_TIMEOUT,
            "-s", str(LUA_SCRIPT), url]
    done = subprocess.run(argv, capture_output=True, text=True, check=True,
                          env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type})
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    return json.loads(line.removeprefix("BENCH_JSON "))


def measure_http(scenario: Scenario, server: Server, body: Path, content_type: str, duration_s: float) -> dict:
    beside: list[dict] = []
    load = None if scenario.beside is None else threading.Thread(target=lambda: beside.append(
        run_wrk(server.url + scenario.beside, body, content_type, EXPLAIN_CONCURRENCY, duration_s)))
    with peak_rss(server.process.pid) as peak:
        if load is not None:
            load.start()
        wrk = run_wrk(server.url + scenario.path, body, content_type, scenario.concurrency, duration_s)
        if load is not None:
            load.join()
    seconds = wrk["duration_us"] / 1e6
    found = {"requests_per_s": wrk["requests"] / seconds, "images_per_s": wrk["requests"] * scenario.images / seconds,
             "p50_ms": wrk["p50_us"] / 1e3, "p99_ms": wrk["p99_us"] / 1e3, "non_2xx": wrk["status"],
             "socket_errors": wrk["connect"] + wrk["read"] + wrk["write"] + wrk["timeout"],
             "peak_rss_mib": peak[0] / 2**20}
    for other in beside:  # its figures ride along; its errors count as the row's
        found.update(beside_requests_per_s=other["requests"] / (other["duration_us"] / 1e6),
                     beside_p99_ms=other["p99_us"] / 1e3, non_2xx=found["non_2xx"] + other["status"],
                     socket_errors=found["socket_errors"] + other["connect"] + other["read"] + other["write"]
                     + other["timeout"])
    return found


def measure_ort(session, input_name: str, batch: np.ndarray, duration_s: float) -> dict:
    """session.run on the same batch, back to back, for `duration_s`: the compute ceiling."""
    latencies, start = [], time.perf_counter()
    while (now := time.perf_counter()) - start < duration_s:
        session.run(None, {input_name: batch})
        latencies.append(time.perf_counter() - now)
    seconds = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    return {"requests_per_s": len(latencies) / seconds, "images_per_s": len(latencies) * len(batch) / seconds,
            "p50_ms": float(p50), "p99_ms": float(p99), "non_2xx": 0, "socket_errors": 0, "peak_rss_mib": None}


def scenarios(names: list[str], concurrency: list[int], batch_concurrency: int,
              explain: bool = False) -> list[Scenario]:
    """Every row, in the order a round runs them: each concurrency's servers side by side."""
    rows = [Scenario(f"{TITLES[who]} /classify", who, concurrency=c) for c in concurrency for who in names]
    rows.append(Scenario(f"{TITLES['ceiling']} /classify_dict", "ceiling", "/classify_dict", concurrency=max(concurrency)))
    rows += [Scenario(f"{TITLES[who]} /classify_batch", who, "/classify_batch", "batch", batch_concurrency, BATCH_IMAGES)
             for who in OURS if who in names]
    rows += [Scenario(f"{TITLES[ORT]} batch {n}", ORT, f"batch {n}", images=n) for n in (1, BATCH_IMAGES)]
    if explain:
        rows += [Scenario(f"{TITLES['ours']} /explain", "ours", "/explain", concurrency=EXPLAIN_CONCURRENCY),
                 Scenario(f"{TITLES['ours']} /classify, /explain loaded beside (c{EXPLAIN_CONCURRENCY})", "ours",
                          concurrency=max(concurrency), beside="/explain")]
    return rows


def check_answers(running: dict[str, Server], bodies: dict[str, tuple[Path, str]], explain: bool = False) -> None:
    """One request to every endpoint before timing: a wrong answer would make the figures meaningless."""
    for server in running.values():
        path, content_type = bodies["digit"]
        for route in ("/classify", "/explain") if explain and server.name == "ours" else ("/classify",):
            answer = httpx.post(server.url + route, content=path.read_bytes(),
                                headers={"Content-Type": content_type}, timeout=30)
            if answer.status_code != 200 or answer.json().get("label") != "7":
                raise RuntimeError(f"{server.name} {route} answered {answer.status_code}: {answer.text[:300]}")
    path, content_type = bodies["batch"]
    for server in (s for name, s in running.items() if name in OURS):
        answer = httpx.post(server.url + "/classify_batch", content=path.read_bytes(),
                            headers={"Content-Type": content_type}, timeout=60)
        if answer.status_code != 200 or answer.json().get("count") != BATCH_IMAGES:
            raise RuntimeError(f"{server.name} /classify_batch answered {answer.status_code}: {answer.text[:300]}")


# -- profile

IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Condition.wait", "EpollSelector.select")  # waiting, not working
# Where a request's time goes: (what, frame names); a sample counts once per line if any of its frames matches.
PROFILE_PARTS = [
    ("HTTP/1.1 parsing and writes (uvicorn: httptools, or h11 without it)",
     ("HttpToolsProtocol.data_received", "H11Protocol.data_received", "RequestResponseCycle.send")),
    ("our request guard: read the body, parse and check the form (serving/guard.py, serving/form.py)",
     ("RequestGuard._read_body", "parse_form")),
    ("BentoML: parse the multipart form, write the upload to a temp file, validate the input",
     ("IOMixin.from_http_request",)),
    ("BentoML: tracing spans (OpenTelemetry), access log, metrics",
     ("Tracer.start_as_current_span", "Tracer.start_span", "Span.end", "Logger._log",
      "RunnerTrafficMetricsMiddleware.__call__.<locals>.wrapped_send")),
    ("image decoding and preprocessing (training/preprocessing.py)", ("ServedModels.prepare",)),
    ("ONNX Runtime session.run", ("Session.run",)),
    ("answer: labels, JSON (serving/runtime.py, json_answer)", ("ServedModels.answer", "top_labels", "json_answer")),
    ("BentoML: validate the returned dict, JSON schema, serialise", ("IOMixin.to_http_response",)),
]


def profile_summary(raw: Path) -> list[tuple[str, float]]:
    """(what, share of busy samples) for PROFILE_PARTS, from py-spy's raw (collapsed stack) output."""
    busy, counts = 0, [0] * len(PROFILE_PARTS)
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")[1:]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        busy += int(n)
        names = {f.split(" (")[0] for f in frames}
        for i, (_, wanted) in enumerate(PROFILE_PARTS):
            counts[i] += int(n) if names.intersection(wanted) else 0
    return [(what, c / busy if busy else 0.0) for (what, _), c in zip(PROFILE_PARTS, counts)]


def profile(server: Server, scenario: Scenario, body: Path, content_type: str, seconds: float, out: Path) -> dict:
    """py-spy samples the server's process tree while wrk loads it; the summary, and the raw stacks in `out`."""
    raw = out / f"profile_{scenario.path.strip('/')}_c{scenario.concurrency}.txt"
    load = threading.Thread(target=run_wrk, args=(server.url + scenario.path, body, content_type,
                                                  scenario.concurrency, seconds + 2))
    load.start()
    time.sleep(1)  # let wrk connect
    subprocess.run([shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                    str(server.process.pid), "--subprocesses", "--duration", f"{seconds:g}", "--rate", "50",
                    "--format", "raw", "--output", str(raw)], check=True, capture_output=True)
    load.join()
    return {"label": scenario.label, "concurrency": scenario.concurrency, "raw": str(raw),
            "parts": profile_summary(raw)}


def render_profiles(profiles: list[dict]) -> str:
    if not profiles:
        return ""
    head = "| where the server's busy time goes (py-spy, share of busy samples) | " + \
        " | ".join(f"{p['label']} c{p['concurrency']}" for p in profiles) + " |"
    lines = [head, "|---|" + "---:|" * len(profiles)]
    for i, (what, _) in enumerate(PROFILE_PARTS):
        lines.append(f"| {what} | " + " | ".join(f"{p['parts'][i][1]:.0%}" for p in profiles) + " |")
    return "\n".join(lines) + "\n"


# -- results


def summarise(rounds: list[list[dict]]) -> list[dict]:
    """One row per scenario: the median of each figure over the rounds, errors summed, memory at its peak."""
    rows = []
    for per_round in zip(*rounds):
        row = {k: per_round[0][k] for k in ("label", "server", "path", "concurrency", "images")}
        for key in ("requests_per_s", "images_per_s", "p50_ms", "p99_ms"):
            row[key] = statistics.median(r[key] for r in per_round)
        row["rounds_requests_per_s"] = [r["requests_per_s"] for r in per_round]
        row["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in per_round)
        peaks = [r["peak_rss_mib"] for r in per_round if r["peak_rss_mib"] is not None]
        row["peak_rss_mib"] = max(peaks) if peaks else None
        if "beside_requests_per_s" in per_round[0]:
            row["label"] += " ({:,.1f} /explain requests/s, p99 {:.0f} ms)".format(
                *(statistics.median(r[key] for r in per_round) for key in ("beside_requests_per_s", "beside_p99_ms")))
        rows.append(row)
    return rows


def _side(results: list[dict], side: tuple[str, str], top_concurrency: int) -> dict | None:
    """The result of (server, path[, beside]) at the highest concurrency, or its only result."""
    found = [r for r in results if (r["server"], r["path"], r.get("beside")) == (*side, None)[:3]]
    return next((r for r in found if r["concurrency"] == top_concurrency), found[0] if found else None)


def ratios(rounds: list[list[dict]], top_concurrency: int) -> dict[str, float]:
    """Each ratio of RATIOS, taken within every round (same drift on both sides), median over rounds."""
    found = {}
    for name, (top, bottom, figure, _) in RATIOS.items():
        pairs = [(_side(r, top, top_concurrency), _side(r, bottom, top_concurrency)) for r in rounds]
        if all(a and b for a, b in pairs):
            found[name] = statistics.median(a[figure] / b[figure] for a, b in pairs)
    return found


def render_table(rows: list[dict]) -> str:
    lines = ["| what | concurrency | requests/s | images/s | p50 ms | p99 ms | errors | peak RSS MiB | requests/s by round |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rss = "-" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:,.0f}"
        by_round = ", ".join(f"{v:,.0f}" for v in r["rounds_requests_per_s"])
        lines.append(f"| {r['label']} | {r['concurrency']} | {r['requests_per_s']:,.0f} | {r['images_per_s']:,.0f} "
                     f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {rss} | {by_round} |")
    return "\n".join(lines)


def render_ratios(found: dict[str, float], errors: int, top_concurrency: int) -> str:
    lines = ["| ratio (median of per-round ratios) | measured | target | met |", "|---|---:|---:|---|"]

    def side(server: str, path: str, beside: str | None = None) -> str:
        return f"{TITLES[server]} {path}" + (f" (c{top_concurrency})" if path in ("/classify", "/classify_dict") else "") \
            + (f" with {beside} loaded beside" if beside else "")

    for name, value in found.items():
        top, bottom, figure, target = RATIOS[name]
        met = "" if target is None else "yes" if (value >= target[1] if target[0] == ">=" else value <= target[1]) else "NO"
        bound = "" if target is None else f"{target[0]} {target[1]:.1f}x"
        lines.append(f"| {FIGURES[figure]}: {side(*top)} / {side(*bottom)} | {value:.2f}x | {bound} | {met} |")
    lines.append(f"| errors (non-2xx + socket), every row and round | {errors} | 0 | {'yes' if errors == 0 else 'NO'} |")
    return "\n".join(lines)


# -- main


def request_bodies(data_root: Path, out: Path) -> tuple[dict[str, tuple[Path, str]], np.ndarray, str]:
    """wrk's request bodies written to `out`, by Scenario.body: (file, Content-Type); the batch's digits, and
    where they came from."""
    digits, source = test_digits(data_root, BATCH_IMAGES)
    bodies = {}
    for key, (body, content_type) in {
        "digit": multipart("image", "digit.png", DIGIT_PNG.read_bytes(), "image/png", model=MODEL),
        "batch": multipart("images", "digits.npy", npy_bytes(digits), "application/octet-stream", model=MODEL),
    }.items():
        (out / f"{key}.body").write_bytes(body)
        bodies[key] = (out / f"{key}.body", content_type)
    return bodies, digits, source


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    bodies, digits, source = request_bodies(args.data_root, out)

    session = create_session((latest(ROOT / "models_store", MODEL) / MODEL_FILE).read_bytes(), args.provider == "cuda")
    input_name = session.get_inputs()[0].name
    ort_batches = {n: (digits[:n].astype(np.float32) / 255.0) for n in (1, BATCH_IMAGES)}
    running = servers(out, args.provider, args.before, args.workers)
    plan = scenarios(list(running), args.concurrency, args.batch_concurrency, args.explain)
    try:
        for server in running.values():
            server.start()
        for server in running.values():
            server.wait_ready()
        check_answers(running, bodies, args.explain)

        def measure(s: Scenario, duration_s: float) -> dict:
            if s.server == ORT:
                result = measure_ort(session, input_name, ort_batches[s.images], duration_s)
            else:
                result = measure_http(s, running[s.server], *bodies[s.body], duration_s)
            return {"label": s.label, "server": s.server, "path": s.path, "concurrency": s.concurrency,
                    "images": s.images, "beside": s.beside, **result}

        for s in plan:
            measure(s, WARMUP_S)
        rounds = []
        for i in range(args.rounds):
            order = plan if i % 2 == 0 else plan[::-1]  # alternate so no scenario always follows the same one
            results = {s: measure(s, args.duration) for s in order}
            rounds.append([results[s] for s in plan])
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
        profiles = [] if not args.profile else [
            profile(running["ours"], s, *bodies[s.body], args.profile, out) for s in plan
            if s.server == "ours" and (s.body == "batch" or s.concurrency == max(args.concurrency))]
    finally:
        for server in running.values():
            server.stop()
    return {"date": utc_now(), "machine": hardware(), "provider": session.get_providers()[0],
            "command": "python -m bench.serve " + " ".join(sys.argv[1:]), "batch_source": source,
            "duration_s": args.duration, "rounds": rounds, "rows": summarise(rounds),
            "ratios": ratios(rounds, max(args.concurrency)), "profiles": profiles}


def report(results: dict[str, Any]) -> str:
    errors = sum(r["errors"] for r in results["rows"])
    return (f"Serving throughput, {results['date']}, {results['machine']}, {results['provider']}; "
            f"`{results['command']}`; {len(results['rounds'])} interleaved rounds of {results['duration_s']:g} s "
            f"per row; batch: {results['batch_source']}\n\n{render_table(results['rows'])}\n\n"
            f"{render_ratios(results['ratios'], errors, max(r['concurrency'] for r in results['rows']))}\n\n"
            f"{render_profiles(results.get('profiles', []))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10, help="seconds of load per row and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                   help="wrk connections for /classify; the targets are checked at the highest")
    p.add_argument("--batch-concurrency", type=int, default=1, help="wrk connections for /classify_batch")
    p.add_argument("--data-root", type=Path, default=Path("data"),
                   help="a folder holding MNIST/raw (the batch's test digits); else the demo's ten digits")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="cpu hides any GPU from the servers; cuda lets ORT and the naive app use one")
    p.add_argument("--before", type=Path, metavar="CHECKOUT",
                   help="also measure the serving.service of this checkout (e.g. a git worktree of HEAD~1)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="also measure serving.service run by N BentoML workers (its memory is all N and the supervisor)")
    p.add_argument("--explain", action="store_true",
                   help="also measure /explain, alone and loaded beside /classify at the highest concurrency")
    p.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                   help="after the rounds, py-spy our server this long under /classify and /classify_batch load")
    p.add_argument("--out", type=Path, default=Path("runs/bench_serve"), help="results.json, results.md, logs")
    args = p.parse_args()
    results = run(args)
    text = report(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (args.out / "results.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
