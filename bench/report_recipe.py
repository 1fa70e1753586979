"""Report A's training recipe as the course code wrote it: the baseline our training benchmarks compare with.

Adam 0.001, batch 100, a torch DataLoader over four copies of the five-class training set (originals,
flipped, and both with uniform noise), each sample a PIL image put through torchvision transforms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from training.registry import ExperimentConfig, get_config

COPIES = 4  # originals, flipped, noisy, flipped and noisy


def report_config() -> ExperimentConfig:
    """fashion_cnn's architecture and init with the report's optimizer, batch and (constant) learning rate,
    scoring the weights as trained."""
    return get_config("fashion_cnn").replace(lr=1e-3, batch_size=100, schedule="constant", label_smoothing=0.0,
                                             ema_decay=0.0)


class AugmentedCopies(Dataset):
    """The report's 4x data set, built the course way: per-sample PIL conversion, flip and noise in Python."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, noise: float, copies: int = COPIES):
        self.images, self.labels, self.noise, self.copies = images, labels, noise, copies
        self.to_tensor, self.to_pil = transforms.ToTensor(), transforms.ToPILImage()

    def __len__(self) -> int:
        return self.copies * len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        copy, j = divmod(i, len(self.labels))
        picture = self.to_pil(self.images[j])  # (28, 28) uint8 -> PIL, as a torchvision dataset gives it
        if copy in (1, 3):
            picture = transforms.functional.hflip(picture)
        x = self.to_tensor(picture)
        if copy in (2, 3):
            x = (x + self.noise * torch.rand_like(x)).clamp(0, 1)
        return x, self.labels[j]


def report_loader(images: torch.Tensor, labels: torch.Tensor, cfg: ExperimentConfig,
                  copies: int = COPIES) -> DataLoader:
    """images: (N, 28, 28) uint8 on the CPU."""
    return DataLoader(AugmentedCopies(images, labels, cfg.uniform_noise, copies), batch_size=cfg.batch_size,
                      shuffle=True)


def report_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One update as the report's loop makes it."""
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
