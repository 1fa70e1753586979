"""How fast a training step runs: bf16 autocast, channels-last images, torch.compile.

By default a GPU run takes bf16 autocast and, for conv nets, channels-last. A CPU run takes channels-last
for conv nets (1.1-1.3x faster, bench.train_step, docs/BENCHMARKS.md) and bf16 autocast for them only where
the CPU multiplies bf16 in hardware (Intel AMX: with channels-last 2.3-4.5x faster than fp32 there; on an
AVX2-only AMD EPYC bf16 was emulated, 0.09x; CPUs with AVX-512 BF16 but no AMX are not measured and stay
fp32); other models train in fp32 (an MLP ran at 0.90x in bf16 even with AMX). bf16
rounds the forward pass, so it changes the arithmetic, not the recipe; CPU runs stay bitwise repeatable
either way. Evaluation always runs in fp32, so a reported accuracy is the one the fp32 ONNX export gives.
Checkpoints hold the plain module's fp32 weights whichever options trained it, so a run may be resumed
with other options.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 on CUDA and for conv nets on AMX CPUs, else fp32
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
        if not self.bf16:  # no autocast context at all: it exists for few device types ("meta" has none)
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def layout(self, inputs: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model's weights are in."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs


FP32 = Speed()


def has_convs(model: nn.Module) -> bool:
    """Whether `model` has 2-D conv weights: the models channels-last and CPU bf16 speed up."""
    return any(p.dim() == 4 for p in model.parameters())


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 matrix units (Intel AMX), where oneDNN runs bf16 convs natively."""
    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def choose_speed(precision: str, compile: bool, device: torch.device, model: nn.Module,
                 channels_last: bool | None = None) -> Speed:
    """The options `model` trains with on `device`. Precision auto: bf16 on CUDA; on a CPU, bf16 for conv nets
    where it multiplies bf16 in hardware, else fp32. `channels_last` None: for conv nets on a CPU, or on CUDA
    in bf16 (CUDA in fp32 is not measured); never for a model without convs, where it would change nothing."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    convs = has_convs(model)
    if precision == "auto":
        bf16 = device.type == "cuda" or (device.type == "cpu" and convs and cpu_multiplies_bf16())
    else:
        bf16 = precision == "bf16"
    if channels_last is None:
        channels_last = device.type == "cpu" or (bf16 and device.type == "cuda")
    return Speed(bf16, channels_last and convs, compile)


def prepare(model: nn.Module, speed: Speed) -> nn.Module:
    """`model` with its conv weights in the batch layout (in place: the optimizer sees the same tensors)."""
    return model.to(memory_format=torch.channels_last) if speed.channels_last else model


def compiled(trainee: nn.Module, speed: Speed) -> nn.Module:
    """The module to call in the training step. Its wrapper's state_dict keys gain `_orig_mod.`, so
    checkpoints are taken from the plain module underneath, never from this."""
    return torch.compile(trainee, backend=COMPILE_BACKEND) if speed.compile else trainee
