"""How fast a training step runs, never what it learns: bf16 autocast, channels-last images, torch.compile.

By default a GPU run takes bf16 autocast and, for image models, channels-last; a CPU run takes fp32 and, for
image models, channels-last, which trains about 1.1-1.2x faster there (bench.train_step, docs/BENCHMARKS.md)
and stays bitwise repeatable. Evaluation always runs in fp32, so a reported accuracy is the one the fp32
ONNX export gives. Checkpoints hold the plain module's weights whichever options trained it, so a run may
be resumed with other options.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 on CUDA, fp32 elsewhere
COMPILE_BACKEND = "inductor"  # torch.compile's own default; the tests swap in aot_eager to skip the C++ build


@dataclass(frozen=True)
class Speed:
    bf16: bool = False           # autocast the forward pass to bfloat16: fp32's range, so no loss scaling
    channels_last: bool = False  # (B, H, W, C) images and conv weights, the layout tensor-core convs want
    compile: bool = False        # torch.compile the module that trains

    def describe(self) -> str:
        """'fp32', or the options taken: 'bf16 autocast, channels-last, torch.compile'."""
        extras = {"channels-last": self.channels_last, "torch.compile": self.compile}
        return ", ".join(["bf16 autocast" if self.bf16 else "fp32", *(name for name, on in extras.items() if on)])

    def autocast(self, device: torch.device) -> AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def for_model(self, model: nn.Module) -> "Speed":
        """These options, less channels-last for a model without conv weights, where it would change nothing."""
        if self.channels_last and not any(p.dim() == 4 for p in model.parameters()):
            return dataclasses.replace(self, channels_last=False)
        return self

    def layout(self, inputs: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model's weights are in."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs


FP32 = Speed()


def choose_speed(precision: str, compile: bool, device: torch.device, input_shape: tuple[int, ...],
                 channels_last: bool | None = None) -> Speed:
    """The options a run trains with; `channels_last` None means: for image models, on a CPU or on CUDA in bf16
    (CUDA in fp32 is not measured)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if channels_last is None:
        channels_last = device.type == "cpu" or (bf16 and device.type == "cuda")
    return Speed(bf16, channels_last and len(input_shape) == 3, compile)


def prepare(model: nn.Module, speed: Speed) -> tuple[nn.Module, Speed]:
    """`model` with its conv weights in the batch layout (in place: the optimizer sees the same tensors), and
    the options it can use: `speed.for_model(model)`."""
    speed = speed.for_model(model)
    return (model.to(memory_format=torch.channels_last) if speed.channels_last else model), speed


def compiled(trainee: nn.Module, speed: Speed) -> nn.Module:
    """The module to call in the training step. Its wrapper's state_dict keys gain `_orig_mod.`, so
    checkpoints are taken from the plain module underneath, never from this."""
    return torch.compile(trainee, backend=COMPILE_BACKEND) if speed.compile else trainee
