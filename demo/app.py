"""The demo over the store the service reads ($MODELS_STORE or ./models_store).

    python -m demo                     # serve it alone on http://127.0.0.1:7860 (demo/__main__.py)
    from demo.app import build         # build the page (the service mounts it at /ui through serving.ui_app)

The service builds the page over the models it serves, so that the demo answers with the same live
versions as the API. Alone, the demo loads the published models itself (sharing the sessions the process
has already loaded) and follows the store's live pointers as the service does; an empty or missing store
gives a page that says so. A function, not a module-level `demo`: BentoML's supervisor imports the
service, which imports this, and must not load models it never serves.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from serving.following import StoreFollower
from serving.runtime import ServedModels, load_models
from training.store import store_from_env

from .ui import build_demo


def build(models: ServedModels | None = None) -> tuple[gr.Blocks, Callable[[], None] | None]:
    """The page over `models` (default: the store's, followed), and what stops what it started, if anything."""
    if models is not None:
        return build_demo(models), None
    models = load_models(store_from_env())
    return build_demo(models), StoreFollower(models).start().stop
