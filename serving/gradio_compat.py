"""What the demo's guard needs from Gradio beyond its public API, in one place.

Written against gradio 6.31.0 (WRITTEN_FOR); `check_version()` warns when another version is installed,
and tests/test_demo_guard.py checks each assumption against the installed one:
- `Blocks.temp_file_sets`: the sets of file paths the app created itself (its uploads, its examples and its
  outputs copied into the cache). Gradio's own check of a file a client names (processing_utils.
  _check_allowed) does nothing for an app mounted with gr.mount_gradio_app, which never counts as
  launched (`Blocks.has_launched`), so the guard checks against these sets instead.
- the paths of Gradio's routes (routes.py) that the page and gradio_client use, listed in serving/ui_guard.py.
Gradio 6.31.0 is the newest release on PyPI (2026-12-06): no release has the mounted app's check fixed.
"""

from __future__ import annotations

import logging
from typing import Iterable

import gradio as gr

log = logging.getLogger("bentoml.serving")

WRITTEN_FOR = "6.31.0"


def check_version() -> None:
    if gr.__version__ != WRITTEN_FOR:
        log.warning("serving/gradio_compat.py was written for gradio %s; %s is installed: run "
                    "tests/test_demo_guard.py", WRITTEN_FOR, gr.__version__)


def created_files(blocks: gr.Blocks) -> Iterable[set[str]]:
    """The sets of paths of the files `blocks` created or received through its upload route, live (they grow
    as visitors upload and the app answers, and shrink as its cache is cleaned)."""
    return blocks.temp_file_sets


def created(blocks: gr.Blocks, path: str) -> bool:
    """Whether `path` is, exactly as written, a file the app created or received through its upload route."""
    return any(path in files for files in created_files(blocks))
