"""The networks of the reports, as nn.Modules and small builders. No training logic here."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

Shape = tuple[int, int, int]  # (C, H, W)


def _flat_size(features: nn.Module, input_shape: Shape) -> int:
    """Width of the flattened feature map, computed rather than written down."""
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


class FashionCNN(nn.Module):
    """Report A: four 5x5 convs (padding 1), one 2x2 max-pool, FC-256, output layer."""

    def __init__(self, input_shape: Shape, num_classes: int,
                 channels: Sequence[int] = (10, 20, 40, 64), kernel: int = 5, hidden: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, kernel, padding=1), nn.ReLU()]
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.MaxPool2d(2, 2), nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FashionCNNBN(nn.Module):
    """Report B: 3x3 conv + BatchNorm + ReLU blocks, pooled after the first and the last."""

    def __init__(self, input_shape: Shape, num_classes: int,
                 channels: Sequence[int] = (10, 20, 40, 80), hidden: int = 265, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for i, out_ch in enumerate(channels):
            layers += [nn.Conv2d(in_ch, out_ch, 3), nn.BatchNorm2d(out_ch), nn.ReLU()]
            if i == 0:
                layers.append(nn.MaxPool2d(2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten())
        # Report B prints Linear -> Dropout -> Linear; the ReLU between is ours (two stacked
        # linear maps would collapse into one).
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _dense_stack(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers through `widths`, each followed by ReLU."""
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class DenseAutoencoder(nn.Module):
    """Fully connected autoencoder; `widths` runs from the pixels down to the code."""

    def __init__(self, input_shape: Shape, num_classes: int, widths: Sequence[int]):
        super().__init__()
        del num_classes  # reconstruction has no classes; the signature is shared by all builders
        self.input_shape = tuple(input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), _dense_stack(widths))
        back = list(reversed(widths))
        # The last layer ends in a sigmoid instead of ReLU, so outputs are valid pixels in [0, 1].
        self.decoder = nn.Sequential(*_dense_stack(back[:-1]), nn.Linear(back[-2], back[-1]), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).view(-1, *self.input_shape)


class AutoencoderClassifier(nn.Module):
    """An autoencoder's encoder (same parameter names) topped by a small classifier head."""

    def __init__(self, input_shape: Shape, num_classes: int, widths: Sequence[int], hidden: int = 256):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), _dense_stack(widths))
        self.head = nn.Sequential(nn.Linear(widths[-1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class Normalize(nn.Module):
    """(x - mean) / std inside the graph, so every consumer feeds plain [0, 1] pixels."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageModel(nn.Module):
    """What every experiment trains and exports: optional normalisation, then the network."""

    def __init__(self, net: nn.Module, normalize: tuple[float, float] | None):
        super().__init__()
        self.normalize = Normalize(*normalize) if normalize else nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) floats in [0, 1]
        return self.net(self.normalize(x))


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fashion_cnn": FashionCNN,
    "fashion_cnn_bn": FashionCNNBN,
    "dense_autoencoder": DenseAutoencoder,
    "autoencoder_classifier": AutoencoderClassifier,
}

_INITS: dict[str, Callable[[torch.Tensor], Any]] = {
    "kaiming": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "xavier": nn.init.xavier_uniform_,
}


def init_weights(model: nn.Module, scheme: str) -> None:
    """He or Xavier init of conv and linear weights (biases to zero); `default` keeps PyTorch's."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _INITS[scheme](module.weight)
            nn.init.zeros_(module.bias)


def build_model(name: str, input_shape: Shape, num_classes: int, kwargs: dict[str, Any],
                normalize: tuple[float, float] | None = None, init: str = "default") -> ImageModel:
    if name not in MODEL_BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_BUILDERS))}")
    net = MODEL_BUILDERS[name](tuple(input_shape), num_classes, **kwargs)
    init_weights(net, init)
    return ImageModel(net, normalize)


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(parameter name, shape, count) for each trainable tensor, in definition order."""
    return [(n, tuple(p.shape), p.numel()) for n, p in model.named_parameters()]
