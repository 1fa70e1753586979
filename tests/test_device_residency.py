"""Training on a device keeps every batch on it: the data path and the augmentation (training.loop,
training.augment) make nothing on the CPU, and no CPU tensor reaches the model.

Checked without a GPU on PyTorch's "meta" device, which has shapes but no values: every operation that
reads or makes a CPU tensor of more than one element during an epoch is recorded, and a hook on the model
sees each input. (A CPU tensor fed to a model on "meta" runs without complaint, so the hook is needed.)
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from training.averaging import average_of
from training.build import model_for, optimizer_for, scheduler_for
from training.data import load_data
from training.loop import predict, train_one_epoch
from training.registry import EXPERIMENTS, get_config
from training.speed import Speed, has_convs, prepare

DEVICE = torch.device("meta")
TINY = {"train_limit": 64, "test_limit": 16, "batch_size": 16, "pretrained": None}


class CpuWork(TorchDispatchMode):
    """Records each operation that reads or makes a CPU tensor of more than one element (0-dim CPU tensors
    are scalars, such as the optimizer's step counts, which PyTorch keeps on the CPU on a GPU as well)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0
               for t in tree_leaves((args, kwargs, out))):
            self.seen.append(str(func))
        return out


def inputs_seen(model: torch.nn.Module) -> list[torch.device]:
    """The device of every tensor given to `model`, call by call, from now on."""
    seen: list[torch.device] = []
    model.register_forward_pre_hook(lambda _, args: seen.extend(a.device for a in args if isinstance(a, torch.Tensor)))
    return seen


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_an_epoch_on_a_device_never_works_on_the_cpu(name: str, data_root: Path) -> None:
    cfg = get_config(name).replace(**TINY)
    data = load_data(cfg, data_root).to(DEVICE)
    model = model_for(cfg, data.input_shape, len(data.class_names), data.tabular, pretrained=False).to(DEVICE)
    speed = Speed(channels_last=has_convs(model))  # as on a GPU, but in fp32: autocast has no "meta"
    model = prepare(model, speed)
    optimizer = optimizer_for(cfg, model)
    scheduler = scheduler_for(cfg, optimizer, math.ceil(len(data.train) / cfg.batch_size))
    gen = torch.Generator().manual_seed(cfg.seed)  # "meta" has no generator of its own: a CPU one draws for it
    seen = inputs_seen(model)

    with CpuWork() as work, pytest.raises(NotImplementedError, match="meta"):
        # the epoch's one host sync, its tallies, comes at its end: "meta" tensors have no values to give
        train_one_epoch(model, data.train, cfg, optimizer, scheduler, gen, speed=speed,
                        average=average_of(model, cfg.ema_decay))
    assert work.seen == []
    batches = [min(cfg.batch_size, len(data.train) - start) for start in range(0, len(data.train), cfg.batch_size)]
    assert len(seen) == sum(size >= 2 for size in batches) and set(seen) == {DEVICE}  # loop.batches skips 1s

    with CpuWork() as work:
        predict(model, data.test.inputs, cfg.eval_batch_size)  # scoring slices the test split on the device too
    assert work.seen == [] and set(seen) == {DEVICE}


def test_a_cpu_tensor_in_the_data_path_is_caught(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a batch that went through the CPU on its way to the model fails it."""
    from training import loop

    as_inputs = loop.as_inputs
    monkeypatch.setattr(loop, "as_inputs", lambda inputs: as_inputs(torch.zeros(inputs.shape, dtype=inputs.dtype)))
    cfg = get_config("fashion_cnn").replace(**TINY)
    data = load_data(cfg, data_root).to(DEVICE)
    model = model_for(cfg, data.input_shape, len(data.class_names), pretrained=False).to(DEVICE)
    seen = inputs_seen(model)
    with CpuWork() as work, pytest.raises(Exception):
        train_one_epoch(model, data.train, cfg, optimizer_for(cfg, model), None, torch.Generator())
    assert work.seen or set(seen) != {DEVICE}
