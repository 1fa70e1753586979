"""The demo over the store the service reads ($MODELS_STORE or ./models_store).

    python -m demo                     # serve it alone on http://127.0.0.1:7860 (demo/__main__.py)
    from demo.app import build         # build the page (the service mounts it at /ui through demo.mount)

Building loads the published models onto ONNX Runtime (sharing the sessions the process has already
loaded); an empty or missing store gives a page that says so. A function, not a module-level `demo`:
BentoML's supervisor imports the service, which imports this, and must not load models it never serves.
"""

from __future__ import annotations

import gradio as gr

from serving.runtime import load_models, store_from_env

from .ui import build_demo


def build() -> gr.Blocks:
    return build_demo(load_models(store_from_env()))
