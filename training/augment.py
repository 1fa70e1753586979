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


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale
# torchvision's adjust_sharpness smoothing kernel: the centre weighs 5, its eight neighbours 1 each.
_SMOOTH_CENTRE, _SMOOTH_TOTAL = 5.0, 13.0


def _factors(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """(B, 1, 1, 1) factors drawn uniformly in [1 - strength, 1 + strength], never below 0."""
    u = torch.rand(x.shape[0], generator=gen, device=x.device).view(-1, 1, 1, 1)
    return (1 + strength * (2 * u - 1)).clamp_min(0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    red, green, blue = _LUMA  # Python numbers: a tensor of them would be copied to the device every batch
    return red * x[:, 0:1] + green * x[:, 1:2] + blue * x[:, 2:3]


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor 1 keeps `image`, 0 gives `other`, above 1 pushes away from it (torchvision's _blend)."""
    return (factor * image + (1 - factor) * other).clamp(0, 1)


def _smoothed(x: torch.Tensor) -> torch.Tensor:
    """Each channel convolved with the 3x3 smoothing kernel; border pixels kept, as torchvision does."""
    c = x.shape[1]
    kernel = torch.ones(c, 1, 3, 3, device=x.device, dtype=x.dtype)  # made on the device, not copied to it
    kernel[:, :, 1, 1] = _SMOOTH_CENTRE
    inner = F.conv2d(x, kernel / _SMOOTH_TOTAL, groups=c)
    out = x.clone()
    out[..., 1:-1, 1:-1] = inner
    return out


def colour_jitter(x: torch.Tensor, cfg: ExperimentConfig, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, sharpness, each with its own factor per image, in that order."""
    if cfg.brightness:
        x = (x * _factors(x, cfg.brightness, gen)).clamp(0, 1)
    if cfg.contrast:
        mean_grey = _grey(x).mean((1, 2, 3), keepdim=True)
        x = _blend(x, mean_grey, _factors(x, cfg.contrast, gen))
    if cfg.saturation:
        x = _blend(x, _grey(x), _factors(x, cfg.saturation, gen))
    if cfg.sharpness:
        x = _blend(x, _smoothed(x), _factors(x, cfg.sharpness, gen))
    return x


def augment_batch(
    x: torch.Tensor, cfg: ExperimentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) views of a (B, C, H, W) batch in [0, 1].

    Geometric and colour changes apply to both views; noise only to the second, so a denoising autoencoder
    learns noisy -> clean and a classifier simply trains on the noisy view.
    """
    n, device = x.shape[0], x.device
    if cfg.flip:
        x = torch.where(_chance(n, 0.5, gen, device), x.flip(-1), x)
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.sharpness:
        x = colour_jitter(x, cfg, gen)
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
