"""ONNX export as a pure function of a checkpoint, checked against PyTorch before anyone uses it."""

from __future__ import annotations

import os
import tempfile
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
from .files import fsync_dir

INPUT_NAME = "pixels"          # (B, C, H, W) float32 in [0, 1]
CHECK_BATCH = 16               # images compared between PyTorch and ONNX Runtime
MAX_ABS_DIFF = 1e-4            # allowed difference between the two, on probabilities or pixels


class ExportError(RuntimeError):
    """The exported graph is invalid or disagrees with PyTorch: nothing is published."""


class InferenceGraph(nn.Module):
    """What is exported: the model plus its output head (softmax for classifiers)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixels)
        return torch.softmax(out, dim=1) if self.task == "classify" else out


def output_name(task: str) -> str:
    return "probabilities" if task == "classify" else "reconstruction"


def _check_inputs(input_shape: tuple[int, ...], sample: torch.Tensor | None) -> torch.Tensor:
    if sample is not None:
        return sample[:CHECK_BATCH].float().cpu()
    gen = torch.Generator().manual_seed(0)  # fixed, so the check is a function of the checkpoint
    return torch.rand(CHECK_BATCH, *input_shape, generator=gen)


def export_onnx(checkpoint: Path, onnx_path: Path, sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Export `checkpoint` to `onnx_path` with a dynamic batch axis; return the agreement check.

    `sample`: optional (B, C, H, W) pixels in [0, 1] (real test images); a seeded random batch otherwise.
    """
    state = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(state)
    graph = InferenceGraph(model, cfg.task).eval()
    input_shape = tuple(state["model_spec"]["input_shape"])
    example = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0))  # shapes only
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=onnx_path.parent, prefix=f".{onnx_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not ours to fix
            torch.onnx.export(
                graph, (example,), tmp, dynamo=True, external_data=False, verbose=False,
                input_names=[INPUT_NAME], output_names=[output_name(cfg.task)],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            )
        onnx.checker.check_model(tmp, full_check=True)
        check = compare_with_torch(graph, tmp, _check_inputs(input_shape, sample), cfg.task)
        os.replace(tmp, onnx_path)
        fsync_dir(onnx_path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return check


def compare_with_torch(graph: nn.Module, onnx_file: str | Path, inputs: torch.Tensor, task: str) -> dict[str, Any]:
    """Run both on `inputs` (and on batch 1, to prove the batch axis is dynamic); raise on disagreement."""
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = graph(inputs).numpy()
    got = session.run(None, {INPUT_NAME: inputs.numpy()})[0]
    single = session.run(None, {INPUT_NAME: inputs[:1].numpy()})[0]
    diff = float(max(np.abs(got - expected).max(), np.abs(single - expected[:1]).max()))
    check: dict[str, Any] = {"batch": len(inputs), "max_abs_diff": diff, "tolerance": MAX_ABS_DIFF}
    if task == "classify":
        check["argmax_identical"] = bool((got.argmax(1) == expected.argmax(1)).all())
    if diff > MAX_ABS_DIFF or not check.get("argmax_identical", True):
        raise ExportError(f"ONNX Runtime disagrees with PyTorch: {check}")
    return check
