"""The one training loop: an epoch of updates, and evaluation, for every experiment."""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import augment_batch
from .data import TensorData
from .distributed import SINGLE, World, shard, sum_over_processes
from .registry import BINARY_LOSSES, ExperimentConfig
from .speed import FP32, Speed

TRACE_POINTS = 20  # mean training loss recorded this many times per epoch, for loss-vs-examples plots


class Average(Protocol):
    """Follows the weights after every optimizer step (training.averaging.WeightAverage)."""

    def update(self) -> None: ...


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], the form every image model takes."""
    return images.float().div_(255)


def as_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """What a model takes: uint8 images become [0, 1] pixels; float features (tables) pass unchanged."""
    return as_pixels(inputs) if inputs.dtype == torch.uint8 else inputs


def class_probabilities(cfg: ExperimentConfig, output: torch.Tensor) -> torch.Tensor:
    """(N, K) probabilities from raw outputs: softmax of K logits, or (1 - p, p) from one binary logit."""
    if cfg.loss in BINARY_LOSSES:
        p = torch.sigmoid(output.float())
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(output.float(), dim=1)


def predicted_labels(cfg: ExperimentConfig, output: torch.Tensor) -> torch.Tensor:
    if cfg.loss in BINARY_LOSSES:
        return (output[:, 0] > 0).long()  # logit > 0 is probability > 0.5
    return output.argmax(1)


def _loss(cfg: ExperimentConfig, output: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor,
          smoothing: float = 0.0) -> torch.Tensor:
    if cfg.task == "reconstruct":
        return F.mse_loss(output, clean)
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(output, labels, label_smoothing=smoothing)
    if cfg.loss == "bce":
        return F.binary_cross_entropy_with_logits(output[:, 0], labels.float())
    if cfg.loss == "sigmoid_mse":  # Report C's heart MLP: sigmoid output, squared error against 0/1
        return F.mse_loss(torch.sigmoid(output[:, 0]), labels.float())
    raise ValueError(f"unknown loss {cfg.loss!r}; known: cross_entropy, {', '.join(BINARY_LOSSES)}")


def _trace(losses: torch.Tensor, sizes: list[int]) -> list[list[float]]:
    """[examples seen so far this epoch, mean loss over the last stretch], TRACE_POINTS times per epoch."""
    ends = torch.tensor(sizes).cumsum(0)
    points = []
    for chunk in torch.arange(len(sizes)).tensor_split(min(TRACE_POINTS, len(sizes))):
        points.append([int(ends[chunk[-1]]), float(losses[chunk].mean())])
    return points


def batches(data: TensorData, cfg: ExperimentConfig, gen: torch.Generator, world: World = SINGLE,
            augment_gen: torch.Generator | None = None,
            desc: str = "train") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of this process's training batches, (labels, clean, noisy): index slices of a fresh
    permutation, augmented as whole batches. Under torchrun each process takes its shard of every batch
    (`gen`, which orders the batches, must be seeded alike everywhere; `augment_gen`, default `gen`,
    should differ per process)."""
    augment_gen = gen if augment_gen is None else augment_gen
    order = torch.randperm(len(data), generator=gen, device=data.inputs.device)
    bar = tqdm(range(0, len(data), cfg.batch_size), desc=desc, leave=False,
               disable=None if world.is_main else True, unit="batch")
    for start in bar:
        idx = order[start: start + cfg.batch_size]
        if len(idx) < 2 * world.size:  # BatchNorm cannot train on a single image, nor DDP on an empty shard
            continue
        idx = shard(idx, world)
        yield (data.labels[idx], *augment_batch(as_inputs(data.inputs[idx]), cfg, augment_gen))


def train_one_epoch(model: nn.Module, data: TensorData, cfg: ExperimentConfig,
                    optimizer: torch.optim.Optimizer, scheduler, gen: torch.Generator,
                    desc: str = "train", world: World = SINGLE,
                    augment_gen: torch.Generator | None = None, speed: Speed = FP32,
                    average: Average | None = None) -> dict[str, float]:
    """One pass over `batches`, updating `average` after every step; returns mean loss (and accuracy over
    every process) of the weights as trained, and a loss trace."""
    model.train()
    device = data.inputs.device
    batch_losses: list[torch.Tensor] = []
    sizes: list[int] = []
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for labels, clean, noisy in batches(data, cfg, gen, world, augment_gen, desc):
        with speed.autocast(device):
            output = model(speed.layout(noisy))
        output = output.float()  # the loss in fp32 whatever the forward ran in (a no-op in fp32)
        loss = _loss(cfg, output, clean, labels, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if average is not None:
            average.update()
        # Kept on the device: no host sync per step.
        batch_losses.append(loss.detach())
        sizes.append(len(labels))
        if cfg.task == "classify":
            correct += (predicted_labels(cfg, output.detach()) == labels).sum()
    losses = torch.stack(batch_losses).float() if batch_losses else torch.zeros(0, device=device)
    weights = torch.tensor(sizes, dtype=torch.float64, device=device)
    # Tallies over every process: (sum of per-sample losses, samples, correct), reduced on the training
    # device, since NCCL reduces GPU tensors only; one host sync per epoch.
    loss_sum, seen, right = sum_over_processes(torch.stack([
        (losses.double() * weights).sum(), weights.sum(), correct.double()]), world).tolist()
    losses = losses.cpu()
    metrics = {"train_loss": loss_sum / max(seen, 1)}
    if cfg.task == "classify":
        metrics["train_accuracy"] = right / max(seen, 1)
    # The trace is this process's losses (rank 0's in the metrics file), placed at global example counts.
    metrics.update(examples=int(seen), loss_trace=_trace(losses, [s * world.size for s in sizes]) if sizes else [])
    return metrics


@torch.inference_mode()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Raw model outputs for uint8 images or float features, in eval mode, batched."""
    model.eval()
    return torch.cat([model(as_inputs(inputs[i: i + batch_size])) for i in range(0, len(inputs), batch_size)])


def evaluate(model: nn.Module, data: TensorData, cfg: ExperimentConfig, prefix: str = "test_") -> dict[str, float]:
    """Loss and accuracy (classification) or MSE on clean inputs (reconstruction), keys starting with `prefix`."""
    output = predict(model, data.inputs, cfg.eval_batch_size)
    if cfg.task == "reconstruct":
        return {f"{prefix}mse": F.mse_loss(output, as_inputs(data.inputs)).item()}
    return {
        f"{prefix}loss": _loss(cfg, output, output, data.labels).item(),
        f"{prefix}accuracy": (predicted_labels(cfg, output) == data.labels).float().mean().item(),
    }
