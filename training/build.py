"""Turn a config (and what the data says about shapes) into model, optimizer and schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .models import ImageModel, build_model
from .registry import ExperimentConfig, config_from_dict


def model_for(cfg: ExperimentConfig, input_shape: tuple[int, int, int], num_classes: int) -> ImageModel:
    return build_model(cfg.model, input_shape, num_classes, dict(cfg.model_kwargs),
                       normalize=cfg.normalize, init=cfg.init)


def model_from_checkpoint(state: dict[str, Any]) -> tuple[ImageModel, ExperimentConfig]:
    """Rebuild the trained model from a checkpoint alone, in eval mode."""
    cfg = config_from_dict(state["config"])
    spec = state["model_spec"]
    model = model_for(cfg, tuple(spec["input_shape"]), len(spec["class_names"]))
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Stop gradients for every parameter whose name starts with one of `prefixes`."""
    for name, param in model.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)


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
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.25)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: constant, onecycle")
