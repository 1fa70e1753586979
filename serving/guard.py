"""ASGI middleware in front of BentoML: refuse what must not reach its parsers, and answer every error in JSON.

Before a request reaches BentoML it checks what BentoML would otherwise mishandle:
- pickle bodies are refused (415) before any parsing;
- bodies over the size limit are refused (413), from Content-Length or while streaming;
- upload endpoints take multipart/form-data only (415), in UTF-8 (a form in another charset names its fields
  otherwise for Starlette); each upload field must be a real file part and every other field plain text
  (400, serving.form): BentoML would otherwise fetch a text value as a URL, or crash on a binary value
  given for a text field;
- JSON endpoints take Content-Type: application/json only (415: BentoML would parse a form body as a form,
  and a browser sends text/plain across sites without asking first) and bodies under their own, smaller
  limit (413): a JSON row is far below it.
Every upload endpoint given a handler in `answers` is then answered from that parse: BentoML does not
parse the body again, so what was checked is exactly what is answered. After, every 4xx/5xx answer gets
the body {"error": "..."}: BentoML's pydantic validation errors become 422 naming the fields, its
plain-text 404/405/503 pages become JSON, and no answer quotes more than a few words of what the client sent.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Mapping

from python_multipart.multipart import parse_options_header
from starlette.responses import Response

from .asgi import App, Message, Receive, Send, echo, header, read_body, replay_body, send_json
from .errors import ServingError, describe_validation_errors
from .form import Form, parse_form

log = logging.getLogger("bentoml.serving")

FormHandler = Callable[[Form], Awaitable[Response]]

JSON_TYPE = b"application/json"


def error_body(status: int, body: bytes, content_type: str, scope: Mapping[str, Any]) -> tuple[int, Any]:
    """(status, JSON value) for an error response: always a dict with a readable "error"."""
    data: Any = None
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # BentoML 1.4 wraps its 4xx errors in a one-element list
    if isinstance(data, dict) and isinstance(data.get("detail"), list):
        if data["detail"] and all(isinstance(d, dict) and "msg" in d for d in data["detail"]):
            message = echo(describe_validation_errors(data["detail"]), 1000)
            invalid_json = all(d.get("type") == "json_invalid" for d in data["detail"])
            return (400 if invalid_json else 422), {"error": message}
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return status, data
    text = body.decode("utf-8", "replace").strip()
    if status == 404:
        text = f"no endpoint at {echo(scope.get('path', ''))}: the endpoints are listed at GET /docs"
    elif status == 405:
        text = f"{echo(scope.get('method', ''))} is not allowed on {echo(scope.get('path', ''))}: see GET /docs"
    return status, {"error": echo(text, 1000) or HTTPStatus(status).phrase}


class RequestGuard:
    """The middleware; `uploads` maps each upload endpoint's path to its file field names, `json_routes`
    are the endpoints that take a JSON body (at most `max_json_bytes`). `answers`, called once the app
    has started (the service exists then), gives the handlers that answer upload endpoints' POSTs from
    the parsed form instead of BentoML. Errors under the `own_errors` path prefixes (a mounted app, such
    as the demo's Gradio, whose page reads its own error format) are passed on as they are. The bodies of
    the requests being answered hold at most `max_buffered_bytes` together: past it, 503 and Retry-After."""

    def __init__(self, app: App, max_body_bytes: int,
                 uploads: Mapping[str, frozenset[str]], json_routes: frozenset[str] = frozenset(),
                 max_json_bytes: int | None = None, answers: Callable[[], Mapping[str, FormHandler]] | None = None,
                 own_errors: tuple[str, ...] = (), max_buffered_bytes: int | None = None):
        self.app, self.max_body_bytes, self.uploads = app, max_body_bytes, dict(uploads)
        self.max_buffered_bytes, self.buffered = max_buffered_bytes or 8 * max_body_bytes, 0
        self.json_routes, self.max_json_bytes = frozenset(json_routes), max_json_bytes or max_body_bytes
        self.answers_when_started, self.answers = answers, {}
        self.own_errors = tuple(prefix.rstrip("/") + "/" for prefix in own_errors)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.answers_when_started is not None:
            return await self.app(scope, receive, self._bind_answers_on_start(send))
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not (scope["path"] + "/").startswith(self.own_errors):  # startswith(()) is False
            send = self._json_errors(scope, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        refusal = self._check_headers(scope)
        if refusal is not None:
            return await send_json(send, refusal[0], {"error": refusal[1]})
        held = self._body_bytes(scope)
        if self.buffered + held > self.max_buffered_bytes:
            return await send_json(send, 503, {"error": "too many uploads in flight: retry in a second"},
                                   [(b"retry-after", b"1")])
        self.buffered += held  # one event loop per worker: no lock
        try:
            await self._with_body(scope, receive, send)
        finally:
            self.buffered -= held

    async def _with_body(self, scope: Message, receive: Receive, send: Send) -> None:
        form = None
        body, refusal = await read_body(receive, self._limit(scope))
        if refusal is None and scope["path"] in self.uploads:
            try:
                form = parse_form(body, header(scope, b"content-type"), self.uploads[scope["path"]])
            except ServingError as err:
                refusal = err.status, str(err)
        if refusal is not None:
            return await send_json(send, refusal[0], {"error": refusal[1]})
        if form is not None and scope["method"] == "POST" and scope["path"] in self.answers:
            return await self._answer(self.answers[scope["path"]], form, scope, receive, send)
        await self.app(scope, replay_body(body, receive), send)

    def _body_bytes(self, scope: Message) -> int:
        """What the request's body may hold in memory while it is answered: its Content-Length (checked
        against the limit already), else the route's limit."""
        length = header(scope, b"content-length")
        return int(length) if length.isdigit() else self._limit(scope)

    def _bind_answers_on_start(self, send: Send) -> Send:
        async def bind(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                answers = dict(self.answers_when_started())
                if not answers.keys() <= self.uploads.keys():
                    raise ValueError(f"answers for {sorted(answers.keys() - self.uploads.keys())}: not uploads")
                self.answers = answers
            elif message["type"].startswith("lifespan.shutdown"):
                self.answers = {}  # the handlers hold the service, and with it every model's session
            await send(message)

        return bind

    @staticmethod
    async def _answer(handler: FormHandler, form: Form, scope: Message, receive: Receive, send: Send) -> None:
        try:
            response = await handler(form)
        except Exception:  # a bug of ours: logged with its traceback, a 500 as BentoML's are
            log.exception("%s %s failed", scope["method"], scope["path"])
            return await send_json(send, 500, {"error": "internal server error: see the service's log"})
        await response(scope, receive, send)

    def _check_headers(self, scope: Message) -> tuple[int, str] | None:
        content_type = header(scope, b"content-type").lower()
        shown = echo(content_type) or "no content type"
        if "pickle" in content_type:
            return 415, f"{shown} is refused: send JSON, or a multipart form with the file"
        length, limit = header(scope, b"content-length"), self._limit(scope)
        if length.isdigit() and int(length) > limit:
            return 413, f"body of {int(length)} bytes is over the limit of {limit} bytes"
        if scope["path"] in self.json_routes and parse_options_header(content_type)[0] != JSON_TYPE:
            return 415, f"{scope['path']} takes a JSON body: send Content-Type: application/json (got {shown})"
        if scope["path"] in self.uploads and not content_type.startswith("multipart/form-data"):
            fields = ", ".join(sorted(self.uploads[scope["path"]]))
            return 415, f"{scope['path']} takes multipart/form-data with the file as {fields} (got {shown})"
        return None

    def _limit(self, scope: Message) -> int:
        return self.max_json_bytes if scope["path"] in self.json_routes else self.max_body_bytes

    @staticmethod
    def _json_errors(scope: Message, send: Send) -> Send:
        """A `send` that holds back error responses and rewrites them with error_body."""
        held: dict[str, Any] = {}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.update(start=message, body=[])
                return
            if "start" not in held or message["type"] != "http.response.body":
                return await send(message)
            held["body"].append(message.get("body", b""))
            if message.get("more_body", False):
                return
            start = held["start"]
            content_type = dict((k.lower(), v) for k, v in start["headers"]).get(b"content-type", b"").decode()
            status, data = error_body(start["status"], b"".join(held["body"]), content_type, scope)
            await send_json(send, status, data, start["headers"])

        return wrapped
