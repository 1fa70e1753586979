"""ONNX export as a pure function of a checkpoint, checked against PyTorch before anyone uses it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .build import model_from_checkpoint
from .checkpoint import load_checkpoint
from .files import replace_durably, temp_beside
from .registry import BINARY_LOSSES, ExperimentConfig

INPUT_NAME = "pixels"          # (B, C, H, W) float32 in [0, 1]
FEATURES_NAME = "features"     # (B, F) float32, a table row encoded as its manifest says
CHECK_BATCH = 16               # images compared between PyTorch and ONNX Runtime
MAX_ABS_DIFF = 1e-4            # allowed difference between the two, on probabilities or pixels


class ExportError(RuntimeError):
    """The exported graph is invalid or disagrees with PyTorch: nothing is published."""


def output_head(cfg: ExperimentConfig) -> str:
    """softmax (K class probabilities), sigmoid (the probability of the second class) or none (images)."""
    if cfg.task != "classify":
        return "none"
    return "sigmoid" if cfg.loss in BINARY_LOSSES else "softmax"


class InferenceGraph(nn.Module):
    """What is exported: the model plus its output head."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(inputs)
        if self.head == "softmax":
            return torch.softmax(out, dim=1)
        return torch.sigmoid(out) if self.head == "sigmoid" else out


def input_name(input_shape: tuple[int, ...]) -> str:
    return INPUT_NAME if len(input_shape) == 3 else FEATURES_NAME


def output_name(cfg: ExperimentConfig) -> str:
    return {"softmax": "probabilities", "sigmoid": "probability", "none": "reconstruction"}[output_head(cfg)]


def _check_inputs(input_shape: tuple[int, ...], sample: torch.Tensor | None) -> torch.Tensor:
    if sample is not None:
        return sample[:CHECK_BATCH].float().cpu()
    gen = torch.Generator().manual_seed(0)  # fixed, so the check is a function of the checkpoint
    return torch.rand(CHECK_BATCH, *input_shape, generator=gen)


def export_onnx(checkpoint: Path, onnx_path: Path, sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Export `checkpoint` to `onnx_path` with a dynamic batch axis; return the agreement check.

    `sample`: optional model inputs (real test images or rows); a seeded random batch otherwise.
    """
    state = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(state)
    graph = InferenceGraph(model, output_head(cfg)).eval()
    input_shape = tuple(state["model_spec"]["input_shape"])
    example = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0))  # shapes only
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(onnx_path)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not ours to fix
            torch.onnx.export(
                graph, (example,), tmp, dynamo=True, external_data=False, verbose=False,
                input_names=[input_name(input_shape)], output_names=[output_name(cfg)],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            )
        onnx.checker.check_model(tmp, full_check=True)
        check = compare_with_torch(graph, tmp, _check_inputs(input_shape, sample), cfg.task,
                                   input_name(input_shape))
        replace_durably(tmp, onnx_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return check


def _decisions(probabilities: np.ndarray) -> np.ndarray:
    """The answered class: argmax of K probabilities, or probability >= 0.5 for a single one."""
    return probabilities.argmax(1) if probabilities.shape[1] > 1 else probabilities[:, 0] >= 0.5


def compare_with_torch(graph: nn.Module, onnx_file: str | Path, inputs: torch.Tensor, task: str,
                       name: str = INPUT_NAME) -> dict[str, Any]:
    """Run both on `inputs` (and on batch 1, to prove the batch axis is dynamic); raise on disagreement."""
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = graph(inputs).numpy()
    got = session.run(None, {name: inputs.numpy()})[0]
    single = session.run(None, {name: inputs[:1].numpy()})[0]
    diff = float(max(np.abs(got - expected).max(), np.abs(single - expected[:1]).max()))
    check: dict[str, Any] = {"batch": len(inputs), "max_abs_diff": diff, "tolerance": MAX_ABS_DIFF}
    if task == "classify":
        check["argmax_identical"] = bool((_decisions(got) == _decisions(expected)).all())
    if diff > MAX_ABS_DIFF or not check.get("argmax_identical", True):
        raise ExportError(f"ONNX Runtime disagrees with PyTorch: {check}")
    return check
