"""serving.http_limits: request heads limited in size, field count and time, on uvicorn's own server."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import httpx
import pytest
import uvicorn
from uvicorn import config as uvicorn_config

from reliability.server import REPO, Server
from serving import http_limits
from serving.http_limits import MAX_HEAD_BYTES, MAX_HEADER_FIELDS, LimitedHttpToolsProtocol

PROTOCOL = LimitedHttpToolsProtocol  # swap in uvicorn's HttpToolsProtocol to see the limit tests fail
SHORT_TIMEOUT_S = 1.5  # the header timeout in these tests
MARGIN_S = 1.5         # for a loaded 2-core machine: a dropped connection reads EOF within timeout + margin
SLOW_CLIENTS = 300


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers how many body bytes it read."""
    size, more = 0, True
    while more:
        message = await receive()
        size, more = size + len(message.get("body", b"")), message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def protocol(header_timeout_s: float = SHORT_TIMEOUT_S) -> type:
    """PROTOCOL with a header timeout short enough for a test."""
    return type("TestProtocol", (PROTOCOL,), {"header_timeout_s": header_timeout_s})


@contextlib.contextmanager
def serve(http: Any = None, **options: Any) -> Iterator[int]:
    """uvicorn on uvloop (as `bentoml serve` runs it) in a thread on a free loopback port; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(echo_length, http=http or protocol(), loop="uvloop", lifespan="off",
                                           log_level="critical", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SHORT_TIMEOUT_S + MARGIN_S)


def read_until_closed(client: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as closed)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def read_response(stream: BinaryIO) -> tuple[int, bytes]:
    """(status, body) of the next response with a Content-Length on `stream` (client.makefile("rb"))."""
    status = int(stream.readline().split(b" ")[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        length = int(value) if name.lower() == b"content-length" else length
    return status, stream.read(length)


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return (int(head.split(b" ")[1]) if head else 0), body


def request(headers: Sequence[bytes] = (), body: bytes = b"") -> bytes:
    lines = [b"POST / HTTP/1.1", b"Host: test", b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def ordinary_headers(count: int) -> list[bytes]:
    """`count` header lines like a browser's, besides Host and Content-Length."""
    return [b"X-Header-%d: %s" % (i, b"v" * 40) for i in range(count)]


def test_install_makes_uvicorns_auto_protocol_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Assumed: Config.load() looks http="auto" (BentoML's worker's choice) up in HTTP_PROTOCOLS by name."""
    monkeypatch.setattr(uvicorn_config, "HTTP_PROTOCOLS", dict(uvicorn_config.HTTP_PROTOCOLS))
    http_limits.install()
    for http in ("auto", "httptools"):
        config = uvicorn.Config(echo_length, http=http)
        config.load()
        assert config.http_protocol_class is LimitedHttpToolsProtocol


def test_a_request_with_many_ordinary_headers_and_a_body_is_answered() -> None:
    """At the field limit, near the size limit, and with a body far over it arriving in the same reads."""
    body = b"x" * 1_000_000
    with serve() as port, connect(port) as client:
        headers = [*ordinary_headers(MAX_HEADER_FIELDS - 3), b"Cookie: " + b"c" * 8000]
        assert len(request(headers)) < MAX_HEAD_BYTES
        client.sendall(request(headers, body))
        assert read_response(client.makefile("rb")) == (200, b"%d" % len(body))


@pytest.mark.parametrize("headers", [
    pytest.param([b"X-Big: " + b"a" * MAX_HEAD_BYTES], id="one-big-header"),
    pytest.param(ordinary_headers(MAX_HEADER_FIELDS - 1), id="too-many-fields"),
    pytest.param([b"a:b"] * 200_000, id="a-megabyte-of-tiny-fields"),
])
def test_a_head_over_a_limit_is_answered_431_and_closed(headers: list[bytes]) -> None:
    with serve() as port, connect(port) as client:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may close before the end
            client.sendall(request(headers))
        status, body = status_and_body(read_until_closed(client))
    assert status == 431 and "error" in json.loads(body)


def test_a_20_mb_header_is_refused_after_the_first_reads_without_holding_it() -> None:
    """The server answers and closes once it has parsed MAX_HEAD_BYTES: the client cannot send it all,
    and the server's Python allocations never grow by anything like the header's size."""
    chunk, total, sent = b"a" * 65536, 20 * 2**20, 0
    with serve() as port, connect(port) as client:
        tracemalloc.start()
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: ")
                while sent < total:
                    client.sendall(chunk)
                    sent += len(chunk)
            response = read_until_closed(client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert status_and_body(response)[0] == 431
    assert sent < total / 2, f"the server read {sent} bytes of the header"
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MiB allocated while refusing it"


def test_two_requests_on_one_connection_are_both_answered_and_the_idle_connection_closes() -> None:
    """Keep-alive and pipelining go on as before, and so does uvicorn's own keep-alive timeout."""
    with serve(timeout_keep_alive=1) as port, connect(port) as client, client.makefile("rb") as responses:
        client.sendall(request(body=b"one"))
        assert read_response(responses) == (200, b"3")
        client.sendall(request(body=b"second") + request(body=b"third"))  # pipelined, in one write
        assert read_response(responses) == (200, b"6")
        assert read_response(responses) == (200, b"5")
        client.sendall(request(body=b"x" * 20_000) + request(body=b"y" * 30_000))  # reads past the head limit
        assert read_response(responses) == (200, b"20000")
        assert read_response(responses) == (200, b"30000")
        started = time.monotonic()
        assert responses.read() == b""
        assert time.monotonic() - started < 1 + MARGIN_S


def partial_head(line: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: test\r\n" if line == 0 else b"X-Slow-%d: 1\r\n" % line


def readable(client: socket.socket, timeout_s: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ)
        return bool(selector.select(timeout_s))


# Silence after a finished request is uvicorn's keep-alive timeout's to end, tested above.
@pytest.mark.parametrize("sends, after_a_request", [
    ("nothing", False), ("part-then-nothing", False), ("a-line-every-half-second", False),
    ("part-then-nothing", True), ("a-line-every-half-second", True)])
def test_a_client_that_does_not_finish_its_headers_is_dropped(sends: str, after_a_request: bool) -> None:
    """Within the header timeout of the connection's opening, or of a later request's first byte, whether
    it keeps sending or not; 408 once it has sent part of a head."""
    with serve() as port, connect(port) as client:
        if after_a_request:
            client.sendall(request())
            assert read_response(client.makefile("rb")) == (200, b"0")
        started = time.monotonic()
        if sends != "nothing":
            client.sendall(partial_head(0))
        line = 1
        while sends == "a-line-every-half-second" and not readable(client, 0.5):
            client.sendall(partial_head(line))
            line += 1
            assert time.monotonic() - started < SHORT_TIMEOUT_S + MARGIN_S, "still connected"
        response = read_until_closed(client)
        elapsed = time.monotonic() - started
    assert status_and_body(response)[0] == (0 if sends == "nothing" else 408)  # nothing asked, nothing answered
    assert elapsed < SHORT_TIMEOUT_S + MARGIN_S


def test_hundreds_of_slow_clients_neither_hold_up_others_nor_stay_connected() -> None:
    """While SLOW_CLIENTS connections hold partial heads (half silent, half sending a line every 0.5 s),
    a normal request is answered; then every slow connection is closed by the server."""
    timeout_s = 3.0  # long enough for the normal request to be answered while all of them are open
    with serve(http=protocol(timeout_s), backlog=SLOW_CLIENTS) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(SLOW_CLIENTS)]
        started = time.monotonic()
        for client in slow:
            client.sendall(partial_head(0))
        with connect(port) as client:
            client.sendall(request(body=b"hello"))
            assert read_response(client.makefile("rb")) == (200, b"5")
        answered_s = time.monotonic() - started
        line = 1
        with selectors.DefaultSelector() as selector:  # select.select stops at file descriptor 1023
            for client in slow:
                selector.register(client, selectors.EVENT_READ)
            while selector.get_map() and time.monotonic() - started < timeout_s + 2 * MARGIN_S:
                for key, _ in selector.select(0.5):
                    with contextlib.suppress(ConnectionResetError):
                        if key.fileobj.recv(65536):
                            continue  # the 408; EOF follows
                    selector.unregister(key.fileobj)
                for client in slow[::2]:
                    with contextlib.suppress(OSError):
                        client.sendall(partial_head(line))
                line += 1
            still_open = len(selector.get_map())
        closed_s = time.monotonic() - started
        for client in slow:
            client.close()
    assert answered_s < timeout_s, "the normal request waited until the slow clients were dropped"
    assert not still_open, f"{still_open} of {SLOW_CLIENTS} slow clients still connected after {closed_s:.1f} s"


@pytest.mark.slow  # starts bentoml serve
def test_bentoml_serve_applies_the_limits_of_a_service_that_installs_them(tmp_path: Path) -> None:
    """tests/http_limits_service.py calls install() at import, as serving.service must."""
    server = Server(["tests.http_limits_service:HeadLimitsService"], REPO,
                    {"HTTP_HEADER_TIMEOUT_S": str(SHORT_TIMEOUT_S)}, tmp_path / "serve.log")
    with server:
        server.wait_ready()
        assert httpx.post(server.url + "/echo", json={"text": "hi"}, headers=dict.fromkeys(
            (f"x-{i}" for i in range(MAX_HEADER_FIELDS - 10)), "1")).text == "hi"
        with connect(server.port) as client:
            client.sendall(request(ordinary_headers(MAX_HEADER_FIELDS)))
            assert status_and_body(read_until_closed(client))[0] == 431
        with connect(server.port) as client:
            started = time.monotonic()
            client.sendall(partial_head(0))
            assert status_and_body(read_until_closed(client))[0] == 408
            assert time.monotonic() - started < SHORT_TIMEOUT_S + MARGIN_S
