"""An attacker's probe of `bentoml serve`, beyond the API's schema: each check returns
{"check", "passed", "figures", "problems"} and covers one class of hole with generated variants.

    demo_files        the demo's API given files it never received (system files, /proc, devices, links,
                      the repository, URLs, path tricks), on every event route and on its file route
    demo_routes       Gradio's routes the page does not use, and uploads that are not pictures
    form_charsets     multipart forms in other charsets, naming fields otherwise for another parser
    metric_labels     made-up paths, which must not become time series
    headers           a huge header and a flood of tiny ones
    slow_clients      hundreds of connections that never finish their headers

Every check works against one server on the store it is given, and watches the worker's memory, CPU and
/livez latency while it runs; docs/RELIABILITY.md#adversarial records the worst figures seen.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import httpx
import psutil

from .load import drawing_png
from .server import REPO, Server, serve_store

Result = dict[str, Any]
EVENT_ROUTES = ("call/classify_upload", "run/classify_upload", "api/classify_upload", "queue/join")
SECRET_FILES = ("/etc/passwd", "/etc/hostname", "/proc/self/environ", "/proc/self/cmdline", "/proc/self/maps")
ENDLESS_FILES = ("/dev/zero", "/dev/urandom", "/proc/self/fd/0")
LIVEZ_WITHIN_S = 2.0  # /livez must answer within this while the probes run


def _result(check: str, problems: list[str], **figures: Any) -> Result:
    return {"check": check, "passed": not problems, "figures": figures, "problems": problems}


class Watch:
    """Samples the worker's RSS and CPU and /livez's latency in a thread while a check runs."""

    def __init__(self, server: Server, period_s: float = 0.25):
        self.server, self.period_s = server, period_s
        self.rss: list[int] = []
        self.livez_s: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.cpu_before = self._cpu()

    def _cpu(self) -> float:
        return sum(sum(w.cpu_times()[:2]) for w in self.server.workers())

    def _run(self) -> None:
        self._sample()
        while not self.stop.wait(self.period_s):
            self._sample()

    def _sample(self) -> None:
        self.rss.append(self.server.rss_bytes())
        started = time.monotonic()
        try:
            httpx.get(self.server.url + "/livez", timeout=30)
            self.livez_s.append(time.monotonic() - started)
        except httpx.TransportError:
            self.livez_s.append(float("inf"))

    def __enter__(self) -> "Watch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.cpu_used = self._cpu() - self.cpu_before  # while the server still runs

    def figures(self) -> dict[str, Any]:
        return {"peak_rss_mib": round(max(self.rss, default=0) / 2**20, 1),
                "worker_cpu_s": round(self.cpu_used, 2),
                "worst_livez_s": round(max(self.livez_s, default=0.0), 3)}

    def problems(self) -> list[str]:
        worst = max(self.livez_s, default=0.0)
        return [f"/livez took {worst:.1f} s while probed"] if worst > LIVEZ_WITHIN_S else []


def foreign_paths(rng: random.Random, work: Path) -> list[str]:
    """Files the demo never received, written every way a client might: the secret files and endless devices
    above, as absolute, relative, dotted, doubled-slash and percent paths; a link to one; files in the
    repository; a picture planted in Gradio's shared cache folder; URLs."""
    link = work / "innocent.png"
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    planted = Path(tempfile.gettempdir()) / "gradio" / "planted" / "x.png"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(drawing_png())
    paths = [str(link), str(planted), str(REPO / "serving" / "service.py"), "serving/service.py", "README.md",
             "file:///etc/passwd", "http://127.0.0.1:1/x.png", "https://example.com/x.png", "//etc/passwd"]
    for target in (*SECRET_FILES, *ENDLESS_FILES):
        depth = "../" * rng.randint(1, 8)
        paths += [target, f"{os.path.relpath(target)}", f"{depth}{target.lstrip('/')}", target.replace("/", "//"),
                  f"/tmp/../{target.lstrip('/')}", f"{target}/.", f"  {target}", quote(target)]
    return paths


def _event(route: str, path: str, nested: bool) -> dict[str, Any]:
    file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    body: dict[str, Any] = {"data": ["digits", {"a": [file]} if nested else file]}
    if route == "queue/join":
        body.update(fn_index=1, session_hash="probe", event_data=None)
    return body


def demo_files(store: Path, work: Path, seed: int = 0, paths: int | None = None) -> Result:
    """No file the demo did not receive is read, copied, hashed or served, whatever the route or spelling
    (`paths`: that many of the spellings, drawn at random; all by default)."""
    work.mkdir(parents=True, exist_ok=True)
    rng, problems, sent = random.Random(seed), [], 0
    secrets = [Path(p).read_bytes()[:64] for p in ("/etc/passwd", "/etc/hostname")]
    spellings = foreign_paths(rng, work)
    with serve_store(store, work / "demo_files.log") as server, Watch(server) as watch:
        ui = server.url + "/ui/gradio_api/"
        for path in rng.sample(spellings, paths) if paths else spellings:
            for route in EVENT_ROUTES:
                for nested in (False, True):
                    answer = httpx.post(ui + route, json=_event(route, path, nested), timeout=30)
                    sent += 1
                    if answer.status_code != 400 or any(s and s in answer.content for s in secrets):
                        problems.append(f"{route} {path!r}: {answer.status_code} {answer.text[:100]}")
            for route in (f"file={path}", f"file/{path}"):
                answer = httpx.get(ui + route, timeout=30)
                sent += 1
                if answer.status_code != 404:
                    problems.append(f"GET {route}: {answer.status_code}")
        problems += watch.problems()
    return _result("demo_files", problems, requests=sent, **watch.figures())


GRADIO_ROUTES = ("monitoring", "monitoring/summary", "gradio_api/runs", "gradio_api/run-history/records",
                 "gradio_api/vibe-code", "gradio_api/dev/reload", "gradio_api/proxy=http://127.0.0.1:1/",
                 "gradio_api/stream/a/b/1/playlist-file", "gradio_api/user", "gradio_api/token", "login", "docs")


def demo_routes(store: Path, work: Path) -> Result:
    """Gradio's routes the page does not use answer 404; uploads take 1-4 pictures and nothing else."""
    work.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with serve_store(store, work / "demo_routes.log") as server, Watch(server) as watch:
        ui = server.url + "/ui/"
        for route in GRADIO_ROUTES:
            for method in ("GET", "POST"):
                status = httpx.request(method, ui + route, timeout=30).status_code
                if status != 404:
                    problems.append(f"{method} /ui/{route}: {status}")
        uploads = {"a text file": [("files", ("a.txt", b"notes", "text/plain"))],
                   "a page": [("files", ("a.html", b"<script>alert(1)</script>", "text/html"))],
                   "1000 pictures": [("files", (f"{i}.png", drawing_png(), "image/png")) for i in range(1000)],
                   "a path as text": [("files", (None, "/etc/passwd"))]}
        for what, files in uploads.items():
            status = httpx.post(ui + "gradio_api/upload", files=files, timeout=30).status_code
            if status not in (400, 413):
                problems.append(f"upload of {what}: {status}")
        if httpx.post(ui + "gradio_api/upload", files=[("files", ("d.png", drawing_png()))]).status_code != 200:
            problems.append("a picture was not taken")
        problems += watch.problems()
    return _result("demo_routes", problems, routes=len(GRADIO_ROUTES) * 2, uploads=len(uploads), **watch.figures())


CHARSETS = ("utf-7", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "shift_jis", "koi8-r",
            "x-no-such-charset", "UTF-8; charset=utf-7", '"utf-7"')


def form_charsets(store: Path, work: Path) -> Result:
    """A form in another charset is refused, never read with other field names (which would open a path)."""
    work.mkdir(parents=True, exist_ok=True)
    problems, sent = [], 0
    with serve_store(store, work / "form_charsets.log") as server, Watch(server) as watch:
        for charset in CHARSETS:
            codec = charset.split(";")[0].strip('"').lower()
            for route, field in (("/reconstruct", "image"), ("/classify_batch", "images"), ("/classify", "image")):
                try:
                    name = field.encode(codec)
                except LookupError:
                    name = field.encode()
                body = (b"--b\r\nContent-Disposition: form-data; name=\"" + name + b"\"\r\n\r\n/etc/hostname\r\n"
                        b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nfashion\r\n--b--\r\n")
                answer = httpx.post(server.url + route, content=body, timeout=30, headers={
                    "content-type": f"multipart/form-data; charset={charset}; boundary=b"})
                sent += 1
                if answer.status_code != 400:
                    problems.append(f"{route} in {charset}: {answer.status_code} {answer.text[:100]}")
        problems += watch.problems()
        if "Traceback" in server.log.read_text():
            problems.append("a traceback in the log")
    return _result("form_charsets", problems, requests=sent, **watch.figures())


def metric_labels(store: Path, work: Path, requests: int = 200, path_bytes: int = 8000, seed: int = 0) -> Result:
    """Made-up paths (under the API and under the demo) leave /metrics as it was."""
    work.mkdir(parents=True, exist_ok=True)
    rng, problems = random.Random(seed), []
    with serve_store(store, work / "metric_labels.log") as server, Watch(server) as watch:
        httpx.get(server.url + "/metrics")
        before = len(httpx.get(server.url + "/metrics").content)
        with httpx.Client(timeout=30) as client:
            for i in range(requests):
                junk = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-_", k=path_bytes))
                client.get(f"{server.url}/{'ui/' if i % 2 else ''}{junk}")
        after = len(httpx.get(server.url + "/metrics").content)
        if after > before + 20_000:
            problems.append(f"/metrics grew from {before} to {after} bytes")
        problems += watch.problems()
    return _result("metric_labels", problems, requests=requests, metrics_bytes_before=before,
                   metrics_bytes_after=after, **watch.figures())


def _raw(url: str, timeout_s: float = 30) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def _status(connection: socket.socket) -> int | None:
    """The status of the answer on `connection`, or None when it was closed without one."""
    try:
        line = connection.makefile("rb").readline()
    except OSError:
        return None
    return int(line.split()[1]) if line.startswith(b"HTTP/") else None


def headers(store: Path, work: Path, huge_mib: int = 200, tiny: int = 3_000_000) -> Result:
    """A 200 MiB header and 3 million tiny ones are refused (431) early, with memory and the loop unharmed."""
    work.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    cases: dict[str, Callable[[], bytes]] = {
        "huge": lambda: b"X-Big: " + b"a" * (1 << 20),
        "tiny": lambda: b"".join(b"a: b\r\n" for _ in range(tiny // 100)),
    }
    figures: dict[str, Any] = {}
    with serve_store(store, work / "headers.log") as server, Watch(server) as watch:
        for name, chunk in cases.items():
            connection = _raw(server.url)
            started, sent = time.monotonic(), 0
            connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            piece = chunk()
            try:
                while sent < (huge_mib << 20 if name == "huge" else tiny * 6):
                    connection.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass  # refused: the server closed the connection
            status = _status(connection)
            connection.close()
            figures[f"{name}_sent_mib_before_refused"] = round(sent / 2**20, 1)
            figures[f"{name}_refused_after_s"] = round(time.monotonic() - started, 2)
            if status not in (431, None) or sent >= (huge_mib << 20 if name == "huge" else tiny * 6):
                problems.append(f"{name} headers: status {status} after {sent} bytes")
        problems += watch.problems()
    return _result("headers", problems, **figures, **watch.figures())


def slow_clients(store: Path, work: Path, connections: int = 300, drop_within_s: float = 30) -> Result:
    """Connections that never finish their headers are dropped, and others are served meanwhile."""
    work.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with serve_store(store, work / "slow_clients.log") as server, Watch(server) as watch:
        slow = []
        for i in range(connections):
            connection = _raw(server.url, timeout_s=drop_within_s + 10)
            connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GE")
            slow.append(connection)
        started = time.monotonic()
        answer = httpx.post(server.url + "/classify", files={"image": ("d.png", drawing_png())},
                            data={"model": "fashion"}, timeout=60)
        served_s = time.monotonic() - started
        if answer.status_code != 200:
            problems.append(f"a normal request got {answer.status_code} with {connections} slow clients open")
        open_after = 0
        for connection in slow:
            try:  # an answer (408) or the end of the stream: the server let go of it
                connection.settimeout(max(0.1, started + drop_within_s - time.monotonic()))
                connection.recv(1024)
            except socket.timeout:
                open_after += 1
            except OSError:
                pass
            connection.close()
        if open_after:
            problems.append(f"{open_after} of {connections} slow connections still open after {drop_within_s} s")
        problems += watch.problems()
    return _result("slow_clients", problems, connections=connections, normal_request_s=round(served_s, 3),
                   still_open=open_after, **watch.figures())


CHECKS: dict[str, Callable[[Path, Path], Result]] = {
    "demo_files": demo_files, "demo_routes": demo_routes, "form_charsets": form_charsets,
    "metric_labels": metric_labels, "headers": headers, "slow_clients": slow_clients}

