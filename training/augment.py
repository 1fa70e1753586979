"""Batched augmentations on the device, driven by one explicit generator (so runs can resume)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import ExperimentConfig


def _chance(n: int, p: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 1, 1, 1) booleans, each true with probability p."""
    return (torch.rand(n, generator=gen, device=device) < p).view(n, 1, 1, 1)


def rotate(x: torch.Tensor, max_degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by its own angle drawn uniformly in [-max_degrees, max_degrees]."""
    n = x.shape[0]
    angles = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * math.radians(max_degrees)
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(
    x: torch.Tensor, cfg: ExperimentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) views of a (B, C, H, W) batch in [0, 1].

    Geometric changes apply to both views; noise only to the second, so a denoising autoencoder
    learns noisy -> clean and a classifier simply trains on the noisy view.
    """
    n, device = x.shape[0], x.device
    if cfg.flip:
        x = torch.where(_chance(n, 0.5, gen, device), x.flip(-1), x)
    if cfg.rotation_degrees:
        x = rotate(x, cfg.rotation_degrees, gen)
    noise = torch.zeros_like(x)
    if cfg.uniform_noise:
        noise += cfg.uniform_noise * torch.rand(x.shape, generator=gen, device=device)
    if cfg.gaussian_noise:
        noise += cfg.gaussian_noise * torch.randn(x.shape, generator=gen, device=device)
    if not (cfg.uniform_noise or cfg.gaussian_noise):
        return x, x
    noisy = torch.where(_chance(n, cfg.noise_probability, gen, device), (x + noise).clamp(0, 1), x)
    return x, noisy
