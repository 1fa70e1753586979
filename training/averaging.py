"""An exponential moving average of the weights: what a run scores, checkpoints for export and publishes
when its config sets `ema_decay`.

At the high learning rates of a one-cycle schedule the weights hop around the floor of the loss valley;
their average over the last ~1 / (1 - decay) steps sits nearer its middle, so the averaged model scores
higher long before the schedule has annealed (fashion_cnn on a validation split: docs/BENCHMARKS.md).
Training itself never sees the average, so with `ema_decay` at 0 nothing changes.

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
    other buffers are copied. `update()` after every optimizer step."""

    def __init__(self, source: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.source, self.decay = source, decay
        self.model = copy.deepcopy(source).eval().requires_grad_(False)

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        mine = [*self.model.parameters(), *self.model.buffers()]
        theirs = [*self.source.parameters(), *self.source.buffers()]
        return list(zip(mine, theirs, strict=True))

    @torch.no_grad()
    def update(self) -> None:
        for averaged, current in self._pairs():
            if averaged.is_floating_point():
                averaged.lerp_(current, 1.0 - self.decay)
            else:
                averaged.copy_(current)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
