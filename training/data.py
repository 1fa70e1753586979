"""Data sets as tensors: find the files, load them, keep the configured classes."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torchvision import datasets

from .preprocessing import ImageSpec
from .registry import FASHION_CLASSES, ExperimentConfig

# Where Debian's `dataset-fashion-mnist` package puts the four gzipped IDX files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


class DataNotFound(RuntimeError):
    """No usable copy of a data set; the message lists every way to provide one."""


@dataclass
class TensorData:
    """A whole split held in memory: batches are index slices, not per-sample Python."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "TensorData":
        return TensorData(self.images.to(device), self.labels.to(device))

    def head(self, n: int | None) -> "TensorData":
        return self if n is None else TensorData(self.images[:n], self.labels[:n])


@dataclass
class DataBundle:
    train: TensorData
    test: TensorData
    class_names: tuple[str, ...]
    source: str  # provenance: where the files were read from

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # (C, H, W)

    def to(self, device: torch.device | str) -> "DataBundle":
        return DataBundle(self.train.to(device), self.test.to(device), self.class_names, self.source)


def select_classes(data: TensorData, classes: tuple[int, ...]) -> TensorData:
    """Keep only `classes` and renumber them 0..k-1 in the given order."""
    lookup = torch.full((int(data.labels.max()) + 1,), -1, dtype=torch.int64)
    lookup[list(classes)] = torch.arange(len(classes))
    new = lookup[data.labels]
    keep = new >= 0
    return TensorData(data.images[keep], new[keep])


def _fashion_download(root: Path) -> None:
    """Torchvision's download; a module-level function so tests can replace it."""
    datasets.FashionMNIST(root, train=True, download=True)


def _fashion_present(root: Path) -> bool:
    raw = root / "FashionMNIST" / "raw"
    return all((raw / name).is_file() for name in FASHION_FILES)


def _unpack_debian_fashion(source: Path, root: Path) -> None:
    """Gunzip Debian's files into torchvision's layout; each file appears whole or not at all."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.")
        with gzip.open(source / f"{name}.gz", "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / name)


def find_fashion_mnist(root: Path) -> str:
    """Make FashionMNIST readable under `root`, trying the three sources in order; returns which."""
    if _fashion_present(root):
        return f"torchvision raw files in {root / 'FashionMNIST' / 'raw'}"
    if all((DEBIAN_FASHION_DIR / f"{name}.gz").is_file() for name in FASHION_FILES):
        _unpack_debian_fashion(DEBIAN_FASHION_DIR, root)
        return f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_DIR}), unpacked into {root}"
    try:
        _fashion_download(root)
    except Exception as err:  # offline, proxy, disk: the user needs the options, not a traceback
        raise DataNotFound(
            f"FashionMNIST not found. Tried, in order:\n"
            f"  1. --data-root {root}: no FashionMNIST/raw/{{{','.join(FASHION_FILES)}}}\n"
            f"  2. Debian's package: no {DEBIAN_FASHION_DIR}/*.gz "
            f"(sudo apt-get install dataset-fashion-mnist)\n"
            f"  3. torchvision's download into {root}: failed ({type(err).__name__}: {err})\n"
            f"Provide one of them and run again."
        ) from err
    return f"torchvision download into {root}"


def _as_tensor_data(ds: datasets.VisionDataset) -> TensorData:
    images = ds.data.unsqueeze(1) if ds.data.ndim == 3 else ds.data  # (N, 1, 28, 28) uint8
    return TensorData(images.contiguous(), ds.targets.to(torch.int64))


def load_fashion_mnist(root: Path) -> DataBundle:
    source = find_fashion_mnist(root)
    train = datasets.FashionMNIST(root, train=True, download=False)
    test = datasets.FashionMNIST(root, train=False, download=False)
    return DataBundle(_as_tensor_data(train), _as_tensor_data(test), FASHION_CLASSES, source)


DATASETS: dict[str, Callable[[Path], DataBundle]] = {
    "fashion_mnist": load_fashion_mnist,
}
# How to bring an arbitrary picture into each data set's form (travels in the manifest).
IMAGE_SPECS: dict[str, ImageSpec] = {
    "fashion_mnist": ImageSpec(height=28, width=28, channels=1, layout="garment"),
}


def load_data(cfg: ExperimentConfig, root: Path) -> DataBundle:
    """The experiment's train and test splits, class subset applied, limits applied."""
    bundle = DATASETS[cfg.dataset](Path(root))
    train, test, names = bundle.train, bundle.test, bundle.class_names
    if cfg.classes is not None:
        train, test = select_classes(train, cfg.classes), select_classes(test, cfg.classes)
        names = tuple(names[c] for c in cfg.classes)
    return DataBundle(train.head(cfg.train_limit), test.head(cfg.test_limit), names, bundle.source)
