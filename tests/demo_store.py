"""The demo tests' tiny store: the serving tests' store (fashion, fashion_reconstruction, heart), digits and cifar10.

Everything is made by the real training, export and publishing code on synthetic data; the serving
store is shared with tests/test_serving*.py (built once per session), and copied before digits is added.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import bentoml
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from serving.ui_app import ui_app

from serving_store import TINY, build_store
from synthetic import CIFAR_CLASSES, write_mnist, write_photo_folder
from training import data as data_module
from training.registry import get_config
from training.run import RunOptions, run_experiment
from training.store import latest

DIGITS_EXPERIMENT = "mnist_cnn32"  # published as digits
PHOTO_EXPERIMENT = "cifar_cnn2_aug"  # published as cifar10
DEMO_SERVICE = "demo-mount-test"
EXAMPLE_DIGIT = Path(__file__).parents[1] / "demo" / "examples" / "mnist" / "7-00000.png"  # a real MNIST test 7


def _no_download(root: Path) -> None:
    raise OSError("tests never download")


def build_demo_store(basetemp: Path) -> Path:
    """basetemp/demo/store: a copy of the serving tests' store with tiny digits and cifar10 classifiers added."""
    root = basetemp / "demo"
    store = root / "store"
    if latest(store, "cifar10") is not None:  # published last
        return store
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(build_store(basetemp / "serving"), store)
    data = write_mnist(root / "data")
    for split, per_class in (("train", 6), ("test", 2)):
        write_photo_folder(data / "cifar10" / split, CIFAR_CLASSES, per_class, seed=len(split))
    with pytest.MonkeyPatch.context() as mp:  # only the synthetic files are ever read
        mp.setattr(data_module, "_mnist_download", _no_download)
        mp.setattr(data_module, "_cifar_download", _no_download)
        for name in (DIGITS_EXPERIMENT, PHOTO_EXPERIMENT):
            run_experiment(get_config(name).replace(**TINY),
                           RunOptions(data_root=data, runs_dir=root / "runs", store=store, device="cpu"))
    return store


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def digit_drawing(size: int = 280) -> Image.Image:
    """A real MNIST test digit as the Sketchpad draws it: black strokes on a transparent RGBA canvas."""
    ink = Image.open(EXAMPLE_DIGIT).convert("L").resize((size, size), Image.Resampling.BILINEAR)
    canvas = np.zeros((size, size, 4), np.uint8)  # black, fully transparent
    canvas[..., 3] = np.asarray(ink)              # the stroke's opacity is the digit's ink
    return Image.fromarray(canvas, "RGBA")


def garment(size: int = 28) -> Image.Image:
    """A FashionMNIST-like picture: a light trouser shape on black, already in training form."""
    pixels = np.zeros((size, size), np.uint8)
    pixels[2:26, 8:13] = 200
    pixels[2:26, 15:20] = 180
    pixels[2:6, 8:20] = 220
    return Image.fromarray(pixels, "L")


@contextlib.contextmanager
def service_with_demo(demo: gr.Blocks) -> Iterator[Any]:
    """The ASGI app of a BentoML service with `demo` at /ui, mounted as serving/service.py mounts it."""

    @bentoml.service(name=DEMO_SERVICE)
    @bentoml.asgi_app(ui_app(demo), path="/ui")
    class WithDemo:
        @bentoml.api
        def ping(self) -> str:
            return "pong"

    # Each app registers its request metrics in prometheus' one global registry, so a second app in this
    # process would collide (as in tests/test_serving.py): in-process apps go without.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps({"services": {DEMO_SERVICE: {"metrics": {"enabled": False}}}}))
        yield WithDemo.to_asgi()
