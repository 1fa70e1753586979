"""The demo as an ASGI app for the BentoML service to mount at /ui.

    from demo.mount import ui_app

    @bentoml.service(...)
    @bentoml.asgi_app(ui_app(), path="/ui")
    class ModelService: ...

Gradio's own gr.mount_gradio_app on a bare FastAPI app is used on purpose: with bentoml 1.4.39 and gradio
6.31, bentoml.gradio.mount_gradio_app serves the API but answers GET /ui/ with HTTP 500 (the page template
finds body_css unset). tests/test_demo_mount.py checks both routes through a BentoML service.
"""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from .ui import LAUNCH_OPTIONS


def ui_app(blocks: gr.Blocks | None = None) -> FastAPI:
    """A FastAPI app serving `blocks` (default: demo.app.demo, built from the store) at its root."""
    if blocks is None:
        from .app import demo as blocks  # builds the page and loads the models: only when asked for
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    return gr.mount_gradio_app(app, blocks, path="/", **LAUNCH_OPTIONS)
