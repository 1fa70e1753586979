"""Turn a config (and what the data says about shapes) into model, optimizer and schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from .data import DataBundle
from .files import sha256_file
from .models import ImageModel, build_model
from .registry import BINARY_LOSSES, ExperimentConfig, config_from_dict
from .speed import Speed, choose_speed, prepare
from .tabular import missing_inputs

MIN_ONECYCLE_STEPS = 8


def output_count(cfg: ExperimentConfig, num_classes: int) -> int:
    """One logit for the binary losses (a probability of the second class), else one per class."""
    return 1 if cfg.loss in BINARY_LOSSES else num_classes


def model_for(cfg: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int,
              tabular: Mapping[str, Any] | None = None, pretrained: bool = True) -> ImageModel:
    """The experiment's model. `tabular`: the data's fitted table encoding, whose "not measured" codes the
    model handles in its graph; `pretrained=False` skips fetching pretrained weights (a checkpoint follows)."""
    kwargs = dict(cfg.model_kwargs)
    if tabular is not None and (found := missing_inputs(tabular)):
        kwargs["missing_inputs"] = found
    return build_model(cfg.model, input_shape, output_count(cfg, num_classes), kwargs,
                       normalize=cfg.normalize, init=cfg.init, pretrained=cfg.pretrained if pretrained else None)


def model_from_checkpoint(state: dict[str, Any]) -> tuple[ImageModel, ExperimentConfig]:
    """Rebuild the trained model from a checkpoint alone, in eval mode."""
    cfg = config_from_dict(state["config"])
    spec = state["model_spec"]
    model = model_for(cfg, tuple(spec["input_shape"]), len(spec["class_names"]), spec.get("tabular"),
                      pretrained=False)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def init_from_checkpoint(model: nn.Module, checkpoint: Path) -> str:
    """Copy every weight whose name and shape match from another run's checkpoint; say what was copied."""
    try:
        source = load_checkpoint(checkpoint)["model"]
    except CheckpointError as err:
        raise CheckpointError(f"{err}: this experiment starts from that run, so train it first") from err
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"{checkpoint} shares no weights with this model")
    model.load_state_dict(matched, strict=False)
    return f"{len(matched)} tensors from {checkpoint} (sha256 {sha256_file(checkpoint)[:12]})"


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Stop gradients for every parameter whose name starts with one of `prefixes`."""
    for name, param in model.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)


def seed_everything(cfg: ExperimentConfig, device: torch.device) -> torch.Generator:
    """Seed everything; return the generator that drives data order and augmentation."""
    torch.manual_seed(cfg.seed)
    # Bitwise-repeatable on CPU (resume equals an uninterrupted run); on GPU cuDNN may pick the
    # fastest kernels, which trades that guarantee for speed.
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return torch.Generator(device=device).manual_seed(cfg.seed)


def optimizer_for(cfg: ExperimentConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "asgd":
        return torch.optim.ASGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: adam, adamw, sgd, asgd")


def scheduler_for(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per batch; None for a constant learning rate."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "onecycle":
        # OneCycleLR needs a few steps to shape a cycle; a smoke run of fewer simply stops early in it.
        total = max(cfg.epochs * steps_per_epoch, MIN_ONECYCLE_STEPS)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: constant, onecycle")


@dataclass
class Setup:
    """What a run trains with, built in the one order every trainer uses (set_up)."""

    gen: torch.Generator  # drives data order and augmentation
    model: nn.Module      # on its device, in its speed's layout, `init_from` weights copied, `freeze` applied
    speed: Speed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    init_from: str | None  # what was copied from `init_from`, as init_from_checkpoint says it


def set_up(cfg: ExperimentConfig, data: DataBundle, device: torch.device, runs_dir: Path | None, *,
           train_size: int | None = None, fresh: bool = True, precision: str = "auto", compile: bool = False,
           channels_last: bool | None = None) -> Setup:
    """Seed, model, speed options (training/speed.py; the defaults are training.fit's), `init_from` weights
    from the run of that name under `runs_dir`, frozen layers, optimizer and schedule for `train_size`
    examples an epoch (default: the whole training split).

    `fresh=False` when a checkpoint's weights follow: nothing pretrained is fetched or copied.
    """
    gen = seed_everything(cfg, device)
    model = model_for(cfg, data.input_shape, len(data.class_names), data.tabular, pretrained=fresh).to(device)
    speed = choose_speed(precision, compile, device, model, channels_last)
    model = prepare(model, speed)
    init_from = None
    if fresh and cfg.init_from:
        if runs_dir is None:
            raise ValueError(f"{cfg.name} starts from the run {cfg.init_from!r}: say where runs are (runs_dir)")
        init_from = init_from_checkpoint(model, Path(runs_dir) / cfg.init_from / CHECKPOINT)
    freeze(model, cfg.freeze)
    optimizer = optimizer_for(cfg, model)
    steps = math.ceil((len(data.train) if train_size is None else train_size) / cfg.batch_size)
    return Setup(gen, model, speed, optimizer, scheduler_for(cfg, optimizer, steps), init_from)
