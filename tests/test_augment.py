"""Batched augmentations: the right kinds of change, reproducible from the generator."""

from __future__ import annotations

import torch

from training.augment import augment_batch, rotate
from training.registry import get_config

REPORT_A = get_config("fashion_cnn")
REPORT_B = get_config("fashion_cnn_bn")


def _batch(n: int = 256) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 10:18, 2:8] = 1.0  # a bar on the left: a flip moves it to the right
    return x


def test_flip_and_uniform_noise_sample_the_four_report_a_sets() -> None:
    x = _batch()
    clean, noisy = augment_batch(x, REPORT_A, torch.Generator().manual_seed(0))
    flipped = clean[:, 0, 10:18, 20:26].mean((1, 2)) == 1.0
    assert 0.35 < flipped.float().mean() < 0.65
    assert torch.equal(clean[~flipped], x[~flipped]) and torch.equal(clean[flipped], x[flipped].flip(-1))
    has_noise = (noisy != clean).flatten(1).any(1)
    assert 0.35 < has_noise.float().mean() < 0.65
    delta = noisy - clean
    assert delta.min() >= 0 and delta.max() <= REPORT_A.uniform_noise  # uniform noise is non-negative
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_rotation_and_gaussian_noise_for_report_b() -> None:
    x = _batch()
    clean, noisy = augment_batch(x, REPORT_B, torch.Generator().manual_seed(0))
    assert not torch.equal(clean, x)  # rotated
    assert ((noisy - clean) < 0).any()  # Gaussian noise goes both ways
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_rotation_by_zero_degrees_is_identity_and_ten_degrees_is_small() -> None:
    x = _batch(8)
    assert torch.allclose(rotate(x, 0.0, torch.Generator().manual_seed(0)), x, atol=1e-6)
    moved = rotate(x, 10.0, torch.Generator().manual_seed(0))
    assert (moved - x).abs().mean() < 0.05  # a 10-degree turn keeps most of the bar in place


def test_same_generator_state_gives_the_same_batch() -> None:
    x = _batch(16)
    a = augment_batch(x, REPORT_B, torch.Generator().manual_seed(3))
    b = augment_batch(x, REPORT_B, torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_no_augmentation_returns_the_batch() -> None:
    x = _batch(4)
    clean, noisy = augment_batch(x, REPORT_A.replace(flip=False, uniform_noise=0.0), torch.Generator())
    assert clean is x and noisy is x


CIFAR_AUG = get_config("cifar_cnn2_aug")


def _photos(n: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2


def test_colour_jitter_stays_in_range_and_varies_per_image() -> None:
    x = _photos()
    clean, noisy = augment_batch(x, CIFAR_AUG.replace(flip=False), torch.Generator().manual_seed(0))
    assert clean is noisy and clean.shape == x.shape  # no noise: one view
    assert 0 <= clean.min() and clean.max() <= 1
    ratios = (clean.mean((1, 2, 3)) / x.mean((1, 2, 3)))
    assert ratios.std() > 0.02  # each image its own brightness


def test_each_jitter_does_its_own_thing() -> None:
    from training.augment import colour_jitter

    x, gen = _photos(8), torch.Generator().manual_seed(0)
    none = CIFAR_AUG.replace(brightness=0.0, contrast=0.0, saturation=0.0, sharpness=0.0)
    grey = x.mean(1, keepdim=True).expand_as(x).clone()
    desaturated = colour_jitter(grey, none.replace(saturation=0.9), gen)
    assert torch.allclose(desaturated, grey, atol=1e-5)  # a grey image has no saturation to change
    flat = torch.full((8, 3, 32, 32), 0.5)
    assert torch.allclose(colour_jitter(flat, none.replace(contrast=0.9, sharpness=0.9), gen), flat, atol=1e-6)
    sharpened = colour_jitter(x, none.replace(sharpness=0.9), gen)
    assert torch.allclose(sharpened[..., 0, :], x[..., 0, :], atol=1e-6)  # borders kept, as torchvision
    assert not torch.equal(sharpened, x)
    assert torch.equal(colour_jitter(x, none, gen), x)
