"""Limits on a request's head (request line and headers) at the HTTP layer, below any ASGI app.

uvicorn 0.55 with httptools, what `bentoml serve` runs (BentoML's worker leaves uvicorn's http="auto",
which picks httptools when it is installed), has no limit on a head's size or field count and no
deadline for reading it: its keep-alive timeout only runs between requests, and any byte stops it. Its
h11 protocol has a size limit only (h11_max_incomplete_event_size). uvicorn 0.55.0 is the newest release
on PyPI (checked 2026-12-06) and has no such option; pull requests adding them for httptools were closed
(uvicorn #1683, #1684). Without them a 200 MB header was read into memory, 3 million tiny headers held
the event loop for seconds, and clients that sent part of a head stayed connected for good (figures in
docs/RELIABILITY.md). httptools joins a header's pieces itself before calling on_header, so the head's
bytes are counted as they arrive, in data_received, and no more than the limit is ever parsed; the
field count is then checked once the head is complete.

`install()` makes this protocol uvicorn's "auto" and "httptools" ones: BentoML's worker imports the
service module before it builds its uvicorn.Config, whose load() looks the class up in
uvicorn.config.HTTP_PROTOCOLS by name. Written against uvicorn 0.55.0 and httptools 0.9.0;
tests/test_http_limits.py checks each assumption.
"""

from __future__ import annotations

import asyncio
import json
import os

from uvicorn import config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024  # request line and headers together: what Node.js and h11 allow
MAX_HEADER_FIELDS = 100     # as Apache's LimitRequestFields and gunicorn's limit_request_fields
# From the connection's opening, then from each later request's first byte: above TCP's first three
# retransmission waits (1 + 2 + 4 s), and short enough that slow clients cannot pile up connections.
HEADER_TIMEOUT_S = float(os.environ.get("HTTP_HEADER_TIMEOUT_S", "10"))


class HeadRefused(Exception):
    """Raised in a parser callback to stop httptools once the head has been answered with an error."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request heads limited in size, field count and time to arrive."""

    max_head_bytes = MAX_HEAD_BYTES
    max_header_fields = MAX_HEADER_FIELDS
    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_bytes: int | None = 0  # bytes since the last request ended or the connection opened; None in a body
        self.head_begun = False          # a request's first byte has come, and not yet the end of its headers
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.header_timeout_s, self.head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is not None:
            room = self.max_head_bytes - self.head_bytes
            if len(data) > room:
                return self.data_past_the_limit(memoryview(data), room)
            self.head_bytes += len(data)
        super().data_received(data)
        if (self.head_bytes is not None and self.head_timer is None and (self.head_begun or self.head_bytes)
                and not self.transport.is_closing()):  # part of a head came: its deadline starts now
            self.head_timer = self.loop.call_later(self.header_timeout_s, self.head_timed_out)

    def data_past_the_limit(self, data: memoryview, room: int) -> None:
        """Parse the head up to its limit, and the rest only if the head ended within it (a body, more requests)."""
        self.head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed, or a websocket now
            return
        if self.head_bytes is not None and self.head_bytes >= self.max_head_bytes:
            return self.refuse(431, f"request line and headers are over the limit of {self.max_head_bytes} bytes")
        self.data_received(data[room:])

    def on_message_begin(self) -> None:
        self.head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.cancel_head_timer()
        if len(self.headers) > self.max_header_fields:
            self.refuse(431, f"more than {self.max_header_fields} header fields")
            raise HeadRefused  # stops httptools before the app sees the request (uvicorn logs it as invalid too)
        self.head_bytes, self.head_begun = None, False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.head_bytes = 0  # whatever comes next is the next request's head
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # else a limit answered already, and raised to stop the parser
            super().send_400_response(msg)

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_begun or self.head_bytes:
            self.refuse(408, f"request headers not complete within {self.header_timeout_s:g} s")
        else:  # nothing sent, nothing to answer: a preconnected socket left unused ends this way too
            self.transport.close()

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def refuse(self, status: int, error: str) -> None:
        """Answer `status` with {"error": ...} unless a response is being written, and close."""
        prefix = "%s:%d - " % self.client if self.client else ""
        self.logger.warning("%s%d: %s", prefix, status, error)
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"error": error}).encode()
            head = [STATUS_LINE[status]]
            head += [b"%s: %s\r\n" % header for header in self.server_state.default_headers]
            head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                     b"connection: close\r\n\r\n", body]
            self.transport.write(b"".join(head))
        self.transport.close()


def install() -> None:
    """Make every uvicorn Config loaded from now on with http="auto" or "httptools" use this protocol."""
    name = f"{__name__}:{LimitedHttpToolsProtocol.__name__}"
    config.HTTP_PROTOCOLS["auto"] = config.HTTP_PROTOCOLS["httptools"] = name
