"""An exponential moving average of the weights: what a run scores, checkpoints for export and publishes
when its config sets `ema_decay`.

At the high learning rates of a one-cycle schedule the weights hop around the floor of the loss valley;
their average over the last ~1 / (1 - decay) steps sits nearer its middle, so the averaged model scores
higher before the schedule has annealed, and the same after (fashion_cnn on a validation split:
docs/BENCHMARKS.md). Early on the decay is warmed up, min(decay, (1 + t) / (10 + t)) at step t = 1, 2, ..., as timm
and TensorFlow do, so that a short run is not scored on what are mostly its initial weights. Training
itself never sees the average, so with `ema_decay` at 0 nothing changes.

torch.optim.swa_utils.AveragedModel does the same job, but blends integer buffers (BatchNorm's batch
counts) through floats and keys its state under `module.`; this copy keeps the model's own keys, so a
checkpoint's weights load into a fresh model whichever way they were made.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """`model` holds the average of `source`'s weights and floating-point buffers (BatchNorm statistics);
    other buffers are copied. `update()` after every optimizer step; `steps` counts them."""

    def __init__(self, source: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.source, self.decay, self.steps = source, decay, 0
        self.model = copy.deepcopy(source).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses: warmed up over the first steps, then `decay`."""
        return min(self.decay, (2 + self.steps) / (11 + self.steps))  # t = steps + 1: this update's number

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        mine = [*self.model.parameters(), *self.model.buffers()]
        theirs = [*self.source.parameters(), *self.source.buffers()]
        return list(zip(mine, theirs, strict=True))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for averaged, current in self._pairs():
            if averaged.is_floating_point():
                averaged.lerp_(current, weight)
            else:
                averaged.copy_(current)
        self.steps += 1

    def load(self, weights: dict[str, torch.Tensor], steps: int) -> None:
        """Continue from a checkpoint: the averaged weights and the number of updates behind them."""
        self.model.load_state_dict(weights)
        self.steps = steps


def average_of(model: nn.Module, decay: float) -> WeightAverage | None:
    """The average a config's `ema_decay` asks for; None at 0, where the weights as trained are scored."""
    return WeightAverage(model, decay) if decay else None


def scored(model: nn.Module, average: WeightAverage | None) -> nn.Module:
    """What is scored, checkpointed as "model" and exported: the average when there is one."""
    return average.model if average is not None else model
