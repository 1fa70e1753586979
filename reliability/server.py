"""`bentoml serve` in a subprocess, as users run it: started, watched (process tree, memory, log) and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).parent / "bentoml")  # the CLI of this environment
START_TIMEOUT_S = 90
QUIET = {"BENTOML_DO_NOT_TRACK": "True"}
SERVICE = "serving.service:ModelService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve ...` in its own process group on a free loopback port, stopped with everything it started."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.process = subprocess.Popen([BENTOML, "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)],
                                            cwd=cwd, env={**os.environ, **QUIET, **env}, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, path: str = "/readyz", timeout_s: float = START_TIMEOUT_S) -> None:
        """Until `path` answers 200 (use /livez for a store that is meant not to be ready)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{path} not 200 after {timeout_s} s:\n{self.log.read_text()}")

    def workers(self) -> list[psutil.Process]:
        """The worker processes that serve requests (BentoML's arbiter starts and restarts them)."""
        try:
            return [p for p in psutil.Process(self.process.pid).children(recursive=True) if "python" in p.name()]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of the arbiter and its workers together."""
        total = 0
        for p in [psutil.Process(self.process.pid), *self.workers()]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM to `bentoml serve` alone (as a supervisor sends it); its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_store(store: Path, log: Path, wait: str | None = "/readyz") -> Server:
    """The service on `store`, waited for until `wait` answers 200 (None: not waited for)."""
    server = Server([SERVICE], REPO, {"MODELS_STORE": str(store)}, log)
    if wait:
        try:
            server.wait_ready(wait)
        except BaseException:
            server.stop()
            raise
    return server
