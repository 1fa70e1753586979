"""The demo as an ASGI app for the BentoML service to mount at /ui, and for `python -m demo` to serve.

    from demo.mount import ui_app

    @bentoml.service(...)
    @bentoml.asgi_app(ui_app(), path="/ui")
    class ModelService: ...

Gradio's own gr.mount_gradio_app on a bare FastAPI app is used on purpose: with bentoml 1.4.39 and gradio
6.31, bentoml.gradio.mount_gradio_app serves the API but answers GET /ui/ with HTTP 500 (the page template
finds body_css unset). tests/test_demo_mount.py checks both routes through a BentoML service.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator, Awaitable, Callable

import gradio as gr
from fastapi import FastAPI

from serving.asgi import read_body, replay_body, send_json

from .ui import LAUNCH_OPTIONS

# A Gradio event's JSON body: pictures arrive as references to earlier uploads, never inline.
MAX_EVENT_BYTES = 1024 * 1024


def ui_app(blocks: gr.Blocks | None = None, started: Callable[[], None] | None = None) -> FastAPI:
    """A FastAPI app serving `blocks` (default: the demo over the store, demo.app.build) at its root.

    The page is built, and its models loaded, when the app starts (its lifespan), not when this is called:
    BentoML's supervisor process imports the service, and so calls this, but never starts its apps, so it
    loads no model; a worker builds the page over the sessions its service has loaded (serving.runtime
    shares them). `started()` is called once the page serves. A FastAPI app, not a bare ASGI wrapper:
    BentoML runs the lifespan only of mounted Starlette apps, and Gradio's queue starts in it.
    """
    page = _Page(blocks, started)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=page.lifespan)
    app.add_middleware(NoRemoteFiles)
    app.mount("/", page)
    return app


class _Page:
    """The Gradio app while the lifespan runs; 503 before it has started.

    One app object may be started by several servers in a process (tests start the service's again and
    again, one inside another): the latest start still running answers. Each start builds its own page
    unless one was given: a given page is one Gradio app, whose queue stops when any of its servers stops.
    """

    def __init__(self, blocks: gr.Blocks | None, started: Callable[[], None] | None):
        self.blocks, self.started = blocks, started
        self.running: list[FastAPI] = []

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        blocks = self.blocks
        if blocks is None:
            from .app import build  # the page over the store: only when a server starts

            blocks = build()
        app = gr.mount_gradio_app(FastAPI(docs_url=None, redoc_url=None, openapi_url=None), blocks, path="/",
                                  **LAUNCH_OPTIONS)
        async with app.router.lifespan_context(app):  # Gradio's own start-up: its queue
            self.running.append(app)
            if self.started is not None:
                self.started()
            try:
                yield
            finally:
                self.running.remove(app)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if not self.running:
            if scope["type"] == "http":  # anything else (a websocket) is closed unanswered
                await send_json(send, 503, {"detail": "the demo is starting"})
            return
        await self.running[-1](scope, receive, send)


class NoRemoteFiles:
    """Refuses (400) a Gradio event that gives a file input as a URL.

    Gradio downloads such a file on the server, any size, to disk (processing_utils.async_move_files_to_cache
    in gradio 6.31, with no setting to turn it off); our service fetches nothing a client names. The page
    itself sends files as uploads, whose paths are the server's own.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _is_json(scope):
            return await self.app(scope, receive, send)
        body, refusal = await read_body(receive, MAX_EVENT_BYTES)
        if refusal is None:
            refusal = _refusal(body)
        if refusal is not None:  # in Gradio's error format, which its page reads
            return await send_json(send, refusal[0], {"detail": refusal[1]})
        await self.app(scope, replay_body(body, receive), send)


def _is_json(scope: dict[str, Any]) -> bool:
    return any(k == b"content-type" and b"json" in v.lower() for k, v in scope["headers"])


def _refusal(body: bytes) -> tuple[int, str] | None:
    """(400, why) when the JSON in `body` holds a file reference ({"path": ...}) whose path is an http(s) URL."""
    try:
        data = json.loads(body)
    except RecursionError:
        return 400, "JSON nested too deep"
    except ValueError:
        return None  # not JSON after all: Gradio answers it
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            path = value.get("path")
            if isinstance(path, str) and path.lstrip().lower().startswith(("http://", "https://")):
                return 400, "a file given as a URL is refused: upload the file itself"
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None
