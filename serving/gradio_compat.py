"""What the demo's guard needs from Gradio beyond its public API, in one place.

Written against gradio 6.31.0 (WRITTEN_FOR); `check_version()` warns when another version is installed,
and tests/test_demo_guard.py checks each assumption against the installed one:
- `Blocks.temp_file_sets`: the sets of file paths the app created itself (its uploads, its examples and its
  outputs copied into the cache). Gradio's own check of a file a client names (processing_utils.
  _check_allowed) does nothing for an app mounted with gr.mount_gradio_app, which never counts as
  launched (`Blocks.has_launched`), so the guard checks against these sets instead.
- GRADIO_TEMP_DIR, read whenever Gradio makes a cache file (utils.get_upload_folder): use_own_cache_folder.
- the paths of Gradio's routes (routes.py) that the page and gradio_client use, listed in serving/ui_guard.py.
Gradio 6.31.0 is the newest release on PyPI (2026-12-06): no release has the mounted app's check fixed.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
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


CACHE_ENV = "GRADIO_TEMP_DIR"  # Gradio's one setting for where it keeps uploads and the files it makes


def use_own_cache_folder() -> Path:
    """Give this process's Gradio a cache folder of its own, under the one Gradio would use.

    Gradio names a cached file by its content's hash, in one folder per machine (/tmp/gradio), and deletes
    every file its app made when the app stops, or after CACHE_AGE_S: a worker that restarted deleted the
    uploads and pictures another worker was using whenever their bytes were the same (the same drawing,
    the same example). Set before the page is built and mounted, so that its uploads and outputs land here.
    """
    base = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "gradio")
    if base.name == f"pid-{os.getpid()}":
        return base  # set already, by an earlier page of this process
    folder = base / f"pid-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder
