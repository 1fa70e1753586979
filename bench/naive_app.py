"""The naive baseline: the FastAPI + PyTorch eager app a course student would deploy for the digits model.

    uvicorn bench.naive_app:create_app --factory --port 3002     # from the repository root

One request at a time through the PyTorch module (an `async def` endpoint runs the model on the event
loop), no batching, preprocessing as course tutorials write it (greyscale, resize to 28x28, ToTensor).
The repository keeps no checkpoints, so the PyTorch module is rebuilt from the registry config in the
manifest's provenance and given the published ONNX file's weights (the exporter keeps the state_dict
names), which makes it exactly the served model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import onnx
import torch
from fastapi import FastAPI, File, Form, UploadFile
from onnx import numpy_helper
from PIL import Image
from torchvision.transforms import functional as TF

from training.build import model_for
from training.models import ImageModel
from training.registry import config_from_dict
from training.store import MODEL_FILE, latest, read_manifest

STORE_ENV, DEFAULT_STORE, MODEL = "MODELS_STORE", "models_store", "digits"
DEVICE_ENV = "NAIVE_DEVICE"    # cpu (default) or cuda: where the student's module runs
THREADS_ENV = "NAIVE_THREADS"  # torch intra-op threads; unset keeps PyTorch's default (one per core), as students do
ONNX_PREFIX = "model."  # torch.onnx names the initializers after the exported wrapper's attribute


def torch_model_from_store(store: Path, name: str = MODEL) -> tuple[ImageModel, dict]:
    """The published model `name` as an eval-mode PyTorch module, and its manifest."""
    version_dir = latest(store, name)
    manifest = read_manifest(version_dir)
    cfg = config_from_dict(manifest["provenance"]["config"])
    shape = tuple(manifest["input"]["shape"][1:])
    model = model_for(cfg, shape, len(manifest["labels"]), pretrained=False)
    graph = onnx.load(version_dir / MODEL_FILE).graph
    weights = {i.name.removeprefix(ONNX_PREFIX): torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in graph.initializer}
    model.load_state_dict({k: weights[k] for k in model.state_dict()})  # KeyError names a missing tensor
    return model.eval(), manifest


def create_app(store: Path | None = None) -> FastAPI:
    """The student's app: POST /classify with the same form fields as the service."""
    store = Path(store or os.environ.get(STORE_ENV, DEFAULT_STORE))
    device = torch.device(os.environ.get(DEVICE_ENV, "cpu"))
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    net, manifest = torch_model_from_store(store)
    net = net.to(device)
    labels, version = manifest["labels"], manifest["version"]
    app = FastAPI()

    @app.post("/classify")
    async def classify(image: UploadFile = File(...), model: str = Form(...), top_k: int = Form(3)) -> dict:
        picture = Image.open(io.BytesIO(await image.read())).convert("L").resize((28, 28))
        x = TF.to_tensor(picture).unsqueeze(0).to(device)  # (1, 1, 28, 28) floats in [0, 1]
        with torch.no_grad():
            probabilities = torch.softmax(net(x), dim=1)[0]
        top = torch.topk(probabilities, top_k)
        return {"model": model, "version": version, "label": labels[int(top.indices[0])],
                "index": int(top.indices[0]),
                "top": [{"label": labels[int(i)], "probability": float(p)} for p, i in zip(top.values, top.indices)],
                "provider": f"torch-{device.type}"}

    return app
