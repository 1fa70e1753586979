"""The networks of the reports, as nn.Modules and small builders. No training logic here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

Shape = tuple[int, ...]  # (C, H, W) for images, (F,) for table rows

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had; the message says how to go on without them."""


def _flat_size(features: nn.Module, input_shape: Shape) -> int:
    """Width of the flattened feature map, computed rather than written down."""
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


class FashionCNN(nn.Module):
    """Report A: four 5x5 convs (padding 1), one 2x2 max-pool, FC-256, output layer; dropout before the
    output layer only where asked (the fashion_search study), so the report's layer names stay."""

    def __init__(self, input_shape: Shape, num_classes: int,
                 channels: Sequence[int] = (10, 20, 40, 64), kernel: int = 5, hidden: int = 256,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, kernel, padding=1), nn.ReLU()]
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.MaxPool2d(2, 2), nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), hidden), nn.ReLU(),
            *([nn.Dropout(dropout)] if dropout else []), nn.Linear(hidden, num_classes),
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
        del input_shape  # widths[0] is the flattened image, as in the autoencoder it starts from
        self.encoder = nn.Sequential(nn.Flatten(), _dense_stack(widths))
        self.head = nn.Sequential(nn.Linear(widths[-1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class MnistCNN(nn.Module):
    """PyTorch's classic MNIST example (Report C): conv, max-pool, ReLU twice; FC-50; dropout.

    hidden=None gives Report D's small CNN: the flattened features go straight to the output layer.
    """

    def __init__(self, input_shape: Shape, num_classes: int, channels: Sequence[int] = (10, 20), kernel: int = 5,
                 hidden: int | None = 50, dropout: float = 0.5):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, kernel), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c1, c2, kernel), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        )
        flat = _flat_size(self.features, input_shape)
        self.hidden = (nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden
                       else nn.Identity())
        self.classifier = nn.Linear(hidden or flat, num_classes)  # the layer transfer learning replaces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.features(x)))


class ConvNet(nn.Module):
    """'Same'-padded conv layers, max-pooling, then dense layers: Report E's MNIST and CIFAR models, and the
    configurable CNN of Report C's grid search (pool after every conv layer, any activation)."""

    def __init__(self, input_shape: Shape, num_classes: int, channels: Sequence[int] = (32, 32), kernel: int = 3,
                 pool: int = 2, pool_each: bool = False, conv_dropout: float = 0.0,
                 hidden: Sequence[int] = (128,), dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), act()]
            if pool_each:
                layers.append(nn.MaxPool2d(pool))
            in_ch = out_ch
        if not pool_each:
            layers.append(nn.MaxPool2d(pool))
        if conv_dropout:
            layers.append(nn.Dropout(conv_dropout))
        self.features = nn.Sequential(*layers, nn.Flatten())
        dense: list[nn.Module] = []
        width = _flat_size(self.features, input_shape)
        for h in hidden:
            dense += [nn.Linear(width, h), act()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        self.hidden = nn.Sequential(*dense)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.features(x)))


class MissingIndicators(nn.Module):
    """For table columns whose "not measured" code is known: put the training mean (0 after scaling) in
    its place and append one 0/1 "not measured" input per such column. Part of the exported graph."""

    def __init__(self, width: int, columns: Sequence[tuple[int, float, float]]):
        super().__init__()
        code, tolerance = torch.zeros(width), torch.zeros(width)  # tolerance 0: never matches
        for index, value, tol in columns:
            code[index], tolerance[index] = value, tol
        self.register_buffer("code", code)
        self.register_buffer("tolerance", tolerance)
        self.register_buffer("index", torch.tensor([c[0] for c in columns], dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F + len(columns))
        missing = (x - self.code).abs() < self.tolerance
        flags = missing.to(x.dtype).index_select(1, self.index)
        return torch.cat([torch.where(missing, torch.zeros_like(x), x), flags], dim=1)


class MLP(nn.Module):
    """Flatten, dense layers with ReLU, output layer: Report D's MNIST MLP and Report C's heart MLPs.

    `missing_inputs` (feature index, code, tolerance) comes from the data's fitted table encoding.
    """

    def __init__(self, input_shape: Shape, num_classes: int, hidden: Sequence[int] = (128,), dropout: float = 0.0,
                 missing_inputs: Sequence[tuple[int, float, float]] = ()):
        super().__init__()
        width = math.prod(input_shape)
        stages: list[nn.Module] = [nn.Flatten()]
        if missing_inputs:
            stages.append(MissingIndicators(width, missing_inputs))
            width += len(missing_inputs)
        self.inputs = nn.Sequential(*stages)
        dense: list[nn.Module] = []
        for h in hidden:
            dense += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        self.hidden = nn.Sequential(*dense)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.inputs(x)))


def resnet50(input_shape: Shape, num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision's ResNet-50, with its ImageNet `weights` when named (Report E), last layer Linear(2048, k)."""
    from torchvision.models import ResNet50_Weights, resnet50 as tv_resnet50

    del input_shape  # global average pooling takes any image size
    net = tv_resnet50(weights=None)
    if weights:
        net.load_state_dict(_pretrained_state(ResNet50_Weights, weights))
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def _pretrained_state(enum: Any, name: str) -> dict[str, torch.Tensor]:
    """torchvision's weights `name`: from torch's cache, else downloaded; offline, an error saying what to do."""
    if name not in enum.__members__:
        raise PretrainedUnavailable(f"unknown weights {name!r}; known: {', '.join(enum.__members__)}, or none")
    weights = enum[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # no network, proxy, bad file: all end the same way for the user
        raise PretrainedUnavailable(
            f"pretrained weights {enum.__name__}.{name} are not in torch's cache ({cached}) and could not be "
            f"downloaded from {weights.url} ({type(err).__name__}: {err}). Train from scratch with "
            f"--weights none, or put that file at {cached} and run again.") from err


def _per_channel(value: Any) -> torch.Tensor:
    """A scalar stays a scalar; a sequence becomes (C, 1, 1), one value per channel."""
    tensor = torch.as_tensor(value, dtype=torch.float32)
    return tensor.view(-1, 1, 1) if tensor.ndim == 1 else tensor


class Normalize(nn.Module):
    """(x - mean) / std inside the graph, so every consumer feeds plain [0, 1] pixels."""

    def __init__(self, mean: Any, std: Any):
        super().__init__()
        self.register_buffer("mean", _per_channel(mean))
        self.register_buffer("std", _per_channel(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageModel(nn.Module):
    """What every experiment trains and exports: optional normalisation, then the network (images or tables)."""

    def __init__(self, net: nn.Module, normalize: tuple[Any, Any] | None):
        super().__init__()
        self.normalize = Normalize(*normalize) if normalize else nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) floats in [0, 1], or (B, F)
        return self.net(self.normalize(x))


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fashion_cnn": FashionCNN,
    "fashion_cnn_bn": FashionCNNBN,
    "dense_autoencoder": DenseAutoencoder,
    "autoencoder_classifier": AutoencoderClassifier,
    "mnist_cnn": MnistCNN,
    "conv_net": ConvNet,
    "mlp": MLP,
    "resnet50": resnet50,
}
PRETRAINED_MODELS = ("resnet50",)  # builders that take a `weights` name

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
            if module.bias is not None:  # ResNet's convs have none
                nn.init.zeros_(module.bias)


def build_model(name: str, input_shape: Shape, num_classes: int, kwargs: dict[str, Any],
                normalize: tuple[Any, Any] | None = None, init: str = "default",
                pretrained: str | None = None) -> ImageModel:
    if name not in MODEL_BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_BUILDERS))}")
    if pretrained:
        if init != "default":
            raise ValueError(f"init {init!r} would overwrite the pretrained weights {pretrained}")
        if name not in PRETRAINED_MODELS:
            raise PretrainedUnavailable(f"model {name!r} has no pretrained weights; "
                                        f"these do: {', '.join(PRETRAINED_MODELS)}")
        kwargs = {**kwargs, "weights": pretrained}
    net = MODEL_BUILDERS[name](tuple(input_shape), num_classes, **kwargs)
    init_weights(net, init)
    return ImageModel(net, normalize)


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(parameter name, shape, count) for each parameter tensor, frozen ones included, in definition order."""
    return [(n, tuple(p.shape), p.numel()) for n, p in model.named_parameters()]
