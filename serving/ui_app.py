"""The demo as an ASGI app for the BentoML service to mount at /ui, and for `python -m demo` to serve.

    from serving.ui_app import ui_app

    @bentoml.service(...)
    @bentoml.asgi_app(ui_app(), path="/ui")
    class ModelService: ...

Gradio's own gr.mount_gradio_app on a bare FastAPI app is used on purpose: with bentoml 1.4.39 and gradio
6.31, bentoml.gradio.mount_gradio_app serves the API but answers GET /ui/ with HTTP 500 (the page template
finds body_css unset). tests/test_demo_mount.py checks both routes through a BentoML service.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Callable

import gradio as gr
from fastapi import FastAPI

from . import gradio_compat
from .asgi import send_json
from .runtime import ServedModels
from .ui_guard import CACHE_AGE_S, CACHE_CHECK_S, DemoGuard

from demo.ui import LAUNCH_OPTIONS


def ui_app(blocks: gr.Blocks | None = None, started: Callable[[], Callable[[], None] | None] | None = None,
           login: Callable[[str, str], bool] | None = None,
           models: Callable[[], ServedModels] | None = None) -> FastAPI:
    """A FastAPI app serving `blocks` (default: the demo over `models()`, or over the store, following it:
    demo.app.build) at its root.

    The page is built, and its models loaded, when the app starts (its lifespan), not when this is called:
    BentoML's supervisor process imports the service, and so calls this, but never starts its apps, so it
    loads no model; a worker builds the page over the sessions its service has loaded (serving.runtime
    shares them). `started()` is called once the page serves; what it returns, if anything, is called when the
    page stops. A FastAPI app, not a bare ASGI wrapper:
    BentoML runs the lifespan only of mounted Starlette apps, and Gradio's queue starts in it.
    """
    gradio_compat.check_version()
    page = _Page(blocks, started, login, models)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=page.lifespan)
    app.add_middleware(DemoGuard, page=page.blocks_serving, login=login is not None)
    app.mount("/", page)
    return app


class _Page:
    """The Gradio app while the lifespan runs; 503 before it has started.

    One app object may be started by several servers in a process (tests start the service's again and
    again, one inside another): the latest start still running answers. Each start builds its own page
    unless one was given: a given page is one Gradio app, whose queue stops when any of its servers stops.
    """

    def __init__(self, blocks: gr.Blocks | None, started: Callable[[], Callable[[], None] | None] | None,
                 login: Callable[[str, str], bool] | None = None, models: Callable[[], ServedModels] | None = None):
        self.blocks, self.started, self.login, self.models = blocks, started, login, models
        self.running: list[tuple[FastAPI, gr.Blocks]] = []

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        gradio_compat.use_own_cache_folder()  # before Gradio makes any file (demo.ui.build_demo calls it too)
        blocks, following = self.blocks, None
        if blocks is None:
            from demo.app import build  # the page over the store: only when a server starts

            blocks, following = build(self.models() if self.models else None)
        if blocks.delete_cache is None:  # Blocks' own setting, read when the app is made: see serving.ui_guard
            blocks.delete_cache = (CACHE_CHECK_S, CACHE_AGE_S)
        app = gr.mount_gradio_app(FastAPI(docs_url=None, redoc_url=None, openapi_url=None), blocks, path="/",
                                  auth=self.login, **LAUNCH_OPTIONS)
        async with app.router.lifespan_context(app):  # Gradio's own start-up: its queue and cache cleaning
            self.running.append((app, blocks))
            stopping = self.started() if self.started is not None else None
            try:
                yield
            finally:
                self.running.remove((app, blocks))
                for stop in (stopping, following):
                    if stop is not None:
                        stop()

    def blocks_serving(self) -> gr.Blocks | None:
        """The Gradio app answering now, or None before the page has started."""
        return self.running[-1][1] if self.running else None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if not self.running:
            if scope["type"] == "http":  # anything else (a websocket) is closed unanswered
                await send_json(send, 503, {"detail": "the demo is starting"})
            return
        await self.running[-1][0](scope, receive, send)
