"""Small ASGI helpers shared by the service's request guard and the demo's guard: no framework in here."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Mapping

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]

MAX_ECHO_CHARS = 100  # a client's string quoted back in an error is cut to this many characters


def header(scope: Mapping[str, Any], name: bytes) -> str:
    """The first value of header `name` (lower case), or ""."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app it reached: Starlette's mounts keep the full path in "path" and
    add what they matched to "root_path"."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def echo(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` as an error may quote it: at most `limit` characters, the cut marked."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


async def send_json(send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(data).encode("utf-8")
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")]
    await send({"type": "http.response.start", "status": status,
                "headers": [*kept, (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> tuple[bytes, tuple[int, str] | None]:
    """The whole request body, or (status, reason) when it is over `limit` bytes or the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", (400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", (413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body already read, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
