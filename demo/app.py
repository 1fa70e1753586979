"""The module-level Gradio app: `demo`, built from the store the service reads ($MODELS_STORE or ./models_store).

    python -m demo                     # serve it alone on http://127.0.0.1:7860 (demo/__main__.py)
    from demo.app import demo          # import it (the service mounts it at /ui through demo.mount)

Importing builds the page and loads the published models onto ONNX Runtime; an empty or missing store
gives a page that says so.
"""

from __future__ import annotations

from serving.runtime import load_models, store_from_env

from .ui import build_demo

demo = build_demo(load_models(store_from_env()))
