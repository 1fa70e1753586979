"""The one training loop: an epoch of updates, and evaluation, for every experiment."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import augment_batch
from .data import TensorData
from .registry import ExperimentConfig


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], the form every model takes."""
    return images.float().div_(255)


def _loss(cfg: ExperimentConfig, output: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor,
          smoothing: float = 0.0) -> torch.Tensor:
    if cfg.task == "reconstruct":
        return F.mse_loss(output, clean)
    return F.cross_entropy(output, labels, label_smoothing=smoothing)


def train_one_epoch(model: nn.Module, data: TensorData, cfg: ExperimentConfig,
                    optimizer: torch.optim.Optimizer, scheduler, gen: torch.Generator,
                    desc: str = "train") -> dict[str, float]:
    """One pass over a fresh permutation of `data`; returns mean loss (and accuracy)."""
    model.train()
    device = data.images.device
    n = len(data)
    order = torch.randperm(n, generator=gen, device=device)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    bar = tqdm(range(0, n, cfg.batch_size), desc=desc, leave=False, disable=None, unit="batch")
    for start in bar:
        idx = order[start: start + cfg.batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single image
            continue
        labels = data.labels[idx]
        clean, noisy = augment_batch(as_pixels(data.images[idx]), cfg, gen)
        output = model(noisy)
        loss = _loss(cfg, output, clean, labels, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # Accumulate on the device: no host sync per step.
        total_loss += loss.detach() * len(idx)
        if cfg.task == "classify":
            correct += (output.detach().argmax(1) == labels).sum()
        seen += len(idx)
    metrics = {"train_loss": total_loss.item() / max(seen, 1)}
    if cfg.task == "classify":
        metrics["train_accuracy"] = correct.item() / max(seen, 1)
    return metrics


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Raw model outputs for uint8 `images`, in eval mode, batched."""
    model.eval()
    return torch.cat([model(as_pixels(images[i: i + batch_size])) for i in range(0, len(images), batch_size)])


def evaluate(model: nn.Module, data: TensorData, cfg: ExperimentConfig) -> dict[str, float]:
    """Test loss and accuracy (classification) or test MSE on clean inputs (reconstruction)."""
    output = predict(model, data.images, cfg.eval_batch_size)
    if cfg.task == "reconstruct":
        return {"test_mse": F.mse_loss(output, as_pixels(data.images)).item()}
    return {
        "test_loss": F.cross_entropy(output, data.labels).item(),
        "test_accuracy": (output.argmax(1) == data.labels).float().mean().item(),
    }
