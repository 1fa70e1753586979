"""ASGI middleware in front of the Gradio demo: the routes its page uses, files it made itself, pictures only.

Gradio's app answers far more than our page needs (monitoring, run history, proxies, streams, code
editing, files anywhere its checks allow), and with the app mounted rather than launched its check of a
file a client names does nothing (serving/gradio_compat.py says why): a JSON event naming
{"path": "/etc/passwd"} made Gradio copy that file into its cache and serve it, and "/dev/zero" hashed
forever on the event loop. So, before Gradio sees a request:
- only the routes in READ_ROUTES, WRITE_ROUTES and UPLOAD_ROUTE are answered; anything else is 404;
- a file reference ({"path": ...}) anywhere in a request's JSON must name, exactly, a file this page created
  or received through its own upload route (400 otherwise, before anything is opened): absolute or
  relative paths, links, /proc, devices, URLs and the repository are all refused alike;
- /gradio_api/file= serves those files only (404 otherwise);
- an upload holds at most MAX_UPLOAD_FILES pictures in the formats and sizes the API takes, and the page's
  uploads in the last CACHE_AGE_S seconds hold at most MAX_RECENT_UPLOAD_BYTES (503 past it), while
  Gradio deletes its cached files after CACHE_AGE_S (serving.ui_app sets the page's delete_cache).
Refusals keep Gradio's error format, {"detail": "..."}, which its page reads.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from typing import Callable

import gradio as gr

from training.preprocessing import DEFAULT_MAX_PIXELS, FORMATS, open_image

from . import gradio_compat
from .asgi import App, Message, Receive, Send, header, read_body, replay_body, route_path, send_json
from .errors import ServingError
from .form import parse_form

# The routes the page and gradio_client use (gradio 6.31's routes.py; found by recording a browser's requests).
READ_ROUTES = re.compile(r"/(|config/?|manifest\.json|theme\.css|favicon\.ico|robots\.txt|pwa_icon(/\d+)?"
                         r"|(assets|static|svelte)/.+|gradio_api/(info/?|openapi\.json|theme\.css|heartbeat/[\w-]+"
                         r"|queue/data|upload_progress|startup-events|call/[\w-]+/[\w-]+))")
WRITE_ROUTES = re.compile(r"/gradio_api/(queue/join|run/[\w-]+/?|call/(v2/)?[\w-]+/?|api/[\w-]+/?|cancel"
                          r"|reset/?|component_server/?)")
LOGIN_ROUTES = re.compile(r"/(login/?|logout|gradio_api/login_check/?)")  # Gradio's login page, when it has one
UPLOAD_ROUTE = "/gradio_api/upload"
FILE_ROUTE = re.compile(r"/gradio_api/file[=/](?P<path>.+)")

MAX_EVENT_BYTES = 1024 * 1024        # an event's JSON: pictures arrive as references to uploads, never inline
MAX_UPLOAD_FILES = 4                 # the canvas sends its layers and their composite; a picture is one file
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per upload request: a phone photo
CACHE_AGE_S = 15 * 60                # Gradio deletes the page's cached files this long after they were made
CACHE_CHECK_S = 60                   # ... looking every this many seconds
MAX_RECENT_UPLOAD_BYTES = 1024 ** 3  # uploads kept in the cache at once, at most (the window is CACHE_AGE_S)


class DemoGuard:
    """The middleware; `page()` is the Gradio app serving now, or None before it has started; with `login`,
    the routes of Gradio's login page are answered too."""

    def __init__(self, app: App, page: Callable[[], gr.Blocks | None], login: bool = False):
        self.app, self.page, self.login = app, page, login
        self.recent_uploads: collections.deque[tuple[float, int]] = collections.deque()  # (time, bytes)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # the page uses no websocket
            return await send({"type": "websocket.close", "code": 1008})
        path, method = route_path(scope), scope["method"]
        if self.login and LOGIN_ROUTES.fullmatch(path):
            return await self.app(scope, receive, send)
        if method in ("GET", "HEAD"):
            served = READ_ROUTES.fullmatch(path) or self._created(FILE_ROUTE.fullmatch(path))
            if not served:
                return await send_json(send, 404, {"detail": "Not Found"})
            return await self.app(scope, receive, send)
        if method != "POST" or not (path == UPLOAD_ROUTE or WRITE_ROUTES.fullmatch(path)):
            return await send_json(send, 404, {"detail": "Not Found"})
        limit = MAX_UPLOAD_BYTES if path == UPLOAD_ROUTE else MAX_EVENT_BYTES
        body, refusal = await read_body(receive, limit)
        if refusal is None:
            refusal = await self._check_upload(scope, body) if path == UPLOAD_ROUTE else self._check_event(body)
        if refusal is not None:
            status, detail = refusal
            headers = [(b"retry-after", str(CACHE_CHECK_S).encode())] if status == 503 else []
            return await send_json(send, status, {"detail": detail}, headers)
        await self.app(scope, replay_body(body, receive), send)

    def _created(self, match: re.Match | None) -> bool:
        page = self.page()
        return bool(match) and page is not None and gradio_compat.created(page, match["path"])

    def _check_event(self, body: bytes) -> tuple[int, str] | None:
        """(400, why) when the JSON in `body` names a file the page did not make or receive."""
        try:
            data = json.loads(body)
        except RecursionError:
            return 400, "JSON nested too deep"
        except ValueError:
            return None  # not JSON: Gradio refuses it itself
        page = self.page()
        stack = [data]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                path = value.get("path")
                if isinstance(path, str) and (page is None or not gradio_compat.created(page, path)):
                    return 400, ("a file the demo did not receive is refused: upload the picture "
                                 "(POST /gradio_api/upload) and send the path that upload answered")
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        return None

    async def _check_upload(self, scope: Message, body: bytes) -> tuple[int, str] | None:
        """(status, why) unless `body` is a form of 1 to MAX_UPLOAD_FILES pictures, with room in the cache."""
        try:
            form = parse_form(body, header(scope, b"content-type"), frozenset({"files"}))
        except ServingError as err:
            return err.status, str(err)
        files = [part for part in form.all_parts if part.is_file]
        if not 1 <= len(files) <= MAX_UPLOAD_FILES:
            return 400, f"an upload holds 1 to {MAX_UPLOAD_FILES} pictures; this one has {len(files)}"
        for part in files:  # PIL reads some headers in Python: off the event loop
            problem = await asyncio.to_thread(_not_a_picture, b"".join(part.chunks))
            if problem:
                return 400, problem
        now = time.monotonic()
        while self.recent_uploads and self.recent_uploads[0][0] < now - CACHE_AGE_S - CACHE_CHECK_S:
            self.recent_uploads.popleft()
        if sum(size for _, size in self.recent_uploads) + len(body) > MAX_RECENT_UPLOAD_BYTES:
            return 503, "the demo's upload space is full for now: try again in a minute"
        self.recent_uploads.append((now, len(body)))
        return None


def _not_a_picture(data: bytes) -> str | None:
    """Why `data` is not a picture the API would take (format and pixel count, from the header), or None."""
    try:
        with open_image(data) as image:
            width, height = image.size
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for what is not a picture it reads
        return f"not a picture: upload a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file"
    if width * height > DEFAULT_MAX_PIXELS:
        return f"the picture is {width}x{height} pixels; the limit is {DEFAULT_MAX_PIXELS} pixels"
    return None
