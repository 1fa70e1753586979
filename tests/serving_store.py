"""A tiny models_store for the serving tests, made by the real training, export and publishing code."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import nn

from synthetic import write_fashion_mnist
from training import data as data_module
from training.registry import get_config
from training.run import RunOptions, run_experiment
from serving.loading import CUDA, create_session
from training.store import MODEL_FILE, latest, publish_model

TINY = {"epochs": 1, "train_limit": 128, "test_limit": 64}
SERVED_EXPERIMENTS = ("fashion_cnn", "fashion_autoencoder")  # published as fashion, fashion_reconstruction

# The manifest schema serving.tabular documents; statistics roughly those of heart.csv.
HEART_TABULAR = {"columns": [
    {"name": "Age", "kind": "numeric", "mean": 53.5, "std": 9.4},
    {"name": "Sex", "kind": "categorical", "categories": ["F", "M"]},
    {"name": "ChestPainType", "kind": "categorical", "categories": ["ASY", "ATA", "NAP", "TA"]},
    {"name": "RestingBP", "kind": "numeric", "mean": 132.4, "std": 18.5},
    {"name": "Cholesterol", "kind": "numeric", "mean": 198.8, "std": 109.4},
    {"name": "FastingBS", "kind": "categorical", "categories": [0, 1]},
    {"name": "RestingECG", "kind": "categorical", "categories": ["LVH", "Normal", "ST"]},
    {"name": "MaxHR", "kind": "numeric", "mean": 136.8, "std": 25.5},
    {"name": "ExerciseAngina", "kind": "categorical", "categories": ["N", "Y"]},
    {"name": "Oldpeak", "kind": "numeric", "mean": 0.89, "std": 1.07},
    {"name": "ST_Slope", "kind": "categorical", "categories": ["Down", "Flat", "Up"]},
], "threshold": 0.5}
HEART_WIDTH = 21  # 5 numeric columns + 2 + 4 + 2 + 3 + 2 + 3 one-hot indicators
HEART_ROW = {"Age": 54, "Sex": "M", "ChestPainType": "ASY", "RestingBP": 140, "Cholesterol": 239, "FastingBS": 0,
             "RestingECG": "Normal", "MaxHR": 160, "ExerciseAngina": "N", "Oldpeak": 1.2, "ST_Slope": "Up"}


def _no_download(root: Path) -> None:
    raise OSError("tests never download")


def heart_net() -> nn.Module:
    """The tiny heart model: a Linear layer and a sigmoid, seeded so tests can rebuild it."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(HEART_WIDTH, 1), nn.Sigmoid()).eval()


def publish_heart(store: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    onnx_file = work / "heart.onnx"
    torch.onnx.export(heart_net(), (torch.zeros(2, HEART_WIDTH),), str(onnx_file), dynamo=True, verbose=False,
                      input_names=["features"], output_names=["probability"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    manifest = {
        "task": "classify", "labels": ["Normal", "HeartDisease"],
        "input": {"name": "features", "shape": [None, HEART_WIDTH], "dtype": "float32"},
        "output": {"name": "probability", "shape": [None, 1], "dtype": "float32"},
        "preprocessing": {"tabular": HEART_TABULAR, "description": "standardised numbers, one-hot categories"},
        "metrics": {"test_accuracy": 0.5, "test_size": 0},
        "report_figure": "none: a test model",
    }
    return publish_model(store, "heart", onnx_file, manifest, "# heart {version}\n\nA test model.\n")


def build_store(root: Path, with_heart: bool = True) -> Path:
    """root/store with the served experiments (and a heart model) published; built once per root."""
    store, done = root / "store", root / "built.json"
    if done.exists():
        return store
    fashion = write_fashion_mnist(root / "data")
    with pytest.MonkeyPatch.context() as mp:  # only the synthetic files are ever read
        mp.setattr(data_module, "DEBIAN_FASHION_DIR", root / "no-debian")
        mp.setattr(data_module, "_fashion_download", _no_download)
        for name in SERVED_EXPERIMENTS:
            run_experiment(get_config(name).replace(**TINY),
                           RunOptions(data_root=fashion, runs_dir=root / "runs", store=store, device="cpu"))
    if with_heart:
        publish_heart(store, root / "heart")
    done.write_text(json.dumps({"experiments": SERVED_EXPERIMENTS, "heart": with_heart}))
    return store


def expected_provider(store: Path) -> str:
    """The provider the service picks on this machine: CUDA where it really works, else CPU."""
    model = (latest(store, "fashion") / MODEL_FILE).read_bytes()
    return create_session(model, CUDA in ort.get_available_providers()).get_providers()[0]
