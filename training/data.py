"""Data sets as tensors: find the files, load them, keep the configured classes.

A data root holds one folder per data set, as torchvision lays them out (MNIST/raw, FashionMNIST/raw,
cifar-10-batches-py) plus ours (cifar10/{train,test}, greek/train, heart/heart.csv). `--data-root` may
also point straight at a data set's own folder or file: an ImageFolder tree, a folder of class folders,
a CSV file.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torchvision import datasets

from . import tabular
from .files import replace_durably, temp_beside
from .preprocessing import ImageError, ImageSpec, decode_image, prepare_image
from .registry import FASHION_CLASSES, MNIST_CLASSES, ExperimentConfig

# Where Debian's `dataset-fashion-mnist` package puts the four gzipped IDX files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
MNIST_FILES = FASHION_FILES  # the same four IDX names, in root/MNIST/raw
CIFAR_BATCHES = "cifar-10-batches-py"  # torchvision's CIFAR-10 folder under the data root
VALIDATION_SEED = 0  # fixed: which training images are held out does not change with --seed


class DataNotFound(RuntimeError):
    """No usable copy of a data set; the message lists every way to provide one."""


@dataclass
class TensorData:
    """A whole split held in memory: batches are index slices, not per-sample Python."""

    inputs: torch.Tensor  # (N, C, H, W) uint8 images, or (N, F) float32 features of a table
    labels: torch.Tensor  # (N,) int64

    @property
    def images(self) -> torch.Tensor:
        """The inputs of an image data set, (N, C, H, W) uint8."""
        return self.inputs

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "TensorData":
        return TensorData(self.inputs.to(device), self.labels.to(device))

    def head(self, n: int | None) -> "TensorData":
        return self if n is None else TensorData(self.inputs[:n], self.labels[:n])

    def subset(self, index: torch.Tensor) -> "TensorData":
        return TensorData(self.inputs[index], self.labels[index])

    def spread(self, n: int | None) -> "TensorData":
        """`n` examples at even steps through the split (all of it when n is None or not smaller), so a
        split stored class by class, as an image folder is, still gives every class in proportion."""
        if n is None or n >= len(self):
            return self
        return self.subset(torch.arange(n) * len(self) // n)


@dataclass
class DataBundle:
    train: TensorData
    test: TensorData
    class_names: tuple[str, ...]
    source: str  # provenance: where the files were read from
    val: TensorData | None = None          # held out of the training split, scored every epoch
    tabular: dict[str, Any] | None = None  # feature encoding fitted on the training rows (tables only)
    test_note: str = ""                    # said wherever test figures are shown, when the split is unusual

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])  # (C, H, W) images, (F,) features

    def to(self, device: torch.device | str) -> "DataBundle":
        return DataBundle(self.train.to(device), self.test.to(device), self.class_names, self.source,
                          self.val.to(device) if self.val is not None else None, self.tabular, self.test_note)


def select_classes(data: TensorData, classes: tuple[int, ...]) -> TensorData:
    """Keep only `classes` and renumber them 0..k-1 in the given order."""
    lookup = torch.full((int(data.labels.max()) + 1,), -1, dtype=torch.int64)
    lookup[list(classes)] = torch.arange(len(classes))
    new = lookup[data.labels]
    keep = new >= 0
    return TensorData(data.inputs[keep], new[keep])


def split_validation(data: TensorData, share: float) -> tuple[TensorData, TensorData]:
    """(train, validation): a fixed random `share` of the images held out."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    k = round(share * len(data))
    return data.subset(order[k:].sort().values), data.subset(order[:k].sort().values)


# -- the MNIST family: IDX files in torchvision's layout

def _fashion_download(root: Path) -> None:
    """Torchvision's download; a module-level function so tests can replace it."""
    datasets.FashionMNIST(root, train=True, download=True)


def _mnist_download(root: Path) -> None:
    datasets.MNIST(root, train=True, download=True)


def _fashion_present(root: Path) -> bool:
    raw = root / "FashionMNIST" / "raw"
    return all((raw / name).is_file() for name in FASHION_FILES)


def _unpack_debian_fashion(source: Path, root: Path) -> None:
    """Gunzip Debian's files into torchvision's layout; each file appears whole or not at all."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        fd, tmp = temp_beside(raw / name)
        try:
            with gzip.open(source / f"{name}.gz", "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
            replace_durably(tmp, raw / name)
        except BaseException:  # a damaged .gz: no half file, and no temp file left behind
            Path(tmp).unlink(missing_ok=True)
            raise


def _download_or_explain(title: str, download: Callable[[Path], None], root: Path, tried: list[str]) -> str:
    """Torchvision's download as the last resort; if it fails too, one error listing every source tried."""
    try:
        download(root)
    except Exception as err:  # offline, proxy, disk: the user needs the options, not a traceback
        tried = [*tried, f"torchvision's download into {root}: failed ({type(err).__name__}: {err})"]
        lines = "\n".join(f"  {i}. {line}" for i, line in enumerate(tried, start=1))
        raise DataNotFound(f"{title} not found. Tried, in order:\n{lines}\nProvide one of them and run again.") from err
    return f"torchvision download into {root}"


def find_fashion_mnist(root: Path) -> str:
    """Make FashionMNIST readable under `root`, trying the three sources in order; returns which."""
    if _fashion_present(root):
        return f"torchvision raw files in {root / 'FashionMNIST' / 'raw'}"
    if all((DEBIAN_FASHION_DIR / f"{name}.gz").is_file() for name in FASHION_FILES):
        _unpack_debian_fashion(DEBIAN_FASHION_DIR, root)
        return f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_DIR}), unpacked into {root}"
    return _download_or_explain("FashionMNIST", _fashion_download, root, [
        f"--data-root {root}: no FashionMNIST/raw/{{{','.join(FASHION_FILES)}}}",
        f"Debian's package: no {DEBIAN_FASHION_DIR}/*.gz (sudo apt-get install dataset-fashion-mnist)",
    ])


def find_mnist(root: Path) -> str:
    """Make MNIST readable under `root`: its raw files there, else torchvision's download; returns which."""
    raw = root / "MNIST" / "raw"
    if all((raw / name).is_file() for name in MNIST_FILES):
        return f"torchvision raw files in {raw}"
    return _download_or_explain("MNIST", _mnist_download, root, [
        f"--data-root {root}: no MNIST/raw/{{{','.join(MNIST_FILES)}}} (the uncompressed IDX files)",
    ])


def _as_tensor_data(ds: datasets.VisionDataset) -> TensorData:
    data = torch.as_tensor(ds.data)
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    return TensorData(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64))


def load_fashion_mnist(root: Path) -> DataBundle:
    source = find_fashion_mnist(root)
    train = datasets.FashionMNIST(root, train=True, download=False)
    test = datasets.FashionMNIST(root, train=False, download=False)
    return DataBundle(_as_tensor_data(train), _as_tensor_data(test), FASHION_CLASSES, source)


def load_mnist(root: Path) -> DataBundle:
    source = find_mnist(root)
    train = datasets.MNIST(root, train=True, download=False)
    test = datasets.MNIST(root, train=False, download=False)
    return DataBundle(_as_tensor_data(train), _as_tensor_data(test), MNIST_CLASSES, source)


# -- image folders: one subfolder of pictures per class (torchvision's ImageFolder layout)

def load_image_folder(folder: Path, spec: ImageSpec,
                      classes: tuple[str, ...] | None = None) -> tuple[TensorData, tuple[str, ...]]:
    """Every picture under folder/CLASS/, brought into `spec`'s form by the shared preprocessing, as uint8.

    Decoded once, here; training then slices the tensor. `classes` (a training split's) must match.
    """
    found = datasets.ImageFolder(folder)  # lists classes and files; reads no pixels
    if classes is not None and tuple(found.classes) != tuple(classes):
        raise DataNotFound(f"{folder}: class folders {found.classes} differ from the training split's {list(classes)}")
    images = np.empty((len(found.samples), spec.channels, spec.height, spec.width), np.uint8)
    for i, (path, _) in enumerate(found.samples):
        try:
            pixels = prepare_image(decode_image(Path(path).read_bytes()), spec)  # (C, H, W) in [0, 1]
        except ImageError as err:
            raise DataNotFound(f"{path}: {err}") from err
        images[i] = np.round(pixels * 255)
    labels = torch.as_tensor(found.targets, dtype=torch.int64)
    return TensorData(torch.from_numpy(images), labels), tuple(found.classes)


def _is_image_folder(folder: Path) -> bool:
    try:
        datasets.ImageFolder(folder)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _cifar_download(root: Path) -> None:
    datasets.CIFAR10(root, train=True, download=True)


def load_cifar10(root: Path) -> DataBundle:
    """An ImageFolder tree (train/, test/) at the root or root/cifar10, torchvision's files, or its download."""
    spec = IMAGE_SPECS["cifar10"]
    trees = [root, root / "cifar10"]
    for tree in trees:
        if _is_image_folder(tree / "train") and _is_image_folder(tree / "test"):
            train, names = load_image_folder(tree / "train", spec)
            test, _ = load_image_folder(tree / "test", spec, classes=names)
            return DataBundle(train, test, names, f"ImageFolder tree {tree} (train/, test/)")
    source = f"torchvision files in {root / CIFAR_BATCHES}"
    if not (root / CIFAR_BATCHES).is_dir():
        source = _download_or_explain("CIFAR-10", _cifar_download, root, [
            f"--data-root {root} or {root / 'cifar10'}: no ImageFolder tree (train/CLASS/*.png|jpg, test/CLASS/...)",
            f"--data-root {root}: no torchvision copy in {root / CIFAR_BATCHES}",
        ])
    train = datasets.CIFAR10(root, train=True, download=False)
    test = datasets.CIFAR10(root, train=False, download=False)
    return DataBundle(_as_tensor_data(train), _as_tensor_data(test), tuple(train.classes), source)


def load_greek(root: Path) -> DataBundle:
    """Class folders of Greek letters (Report C: 27 images, no test split) in MNIST form."""
    candidates = [root / "greek" / "train", root / "greek", root]
    folder = next((c for c in candidates if _is_image_folder(c)), None)
    if folder is None:
        raise DataNotFound("Greek letters not found: give --data-root a folder of class folders "
                           "(alpha/, beta/, gamma/ with images); tried " + ", ".join(map(str, candidates)))
    data, names = load_image_folder(folder, IMAGE_SPECS["greek"])
    note = (f"no test split exists: the test figures are on the {len(data)} training images themselves, as "
            "Report C measured; the held-out (cross-validated) figure is the honest one")
    return DataBundle(data, data, names, f"ImageFolder {folder}, prepared as MNIST digits", test_note=note)


# -- the heart failure table

def find_heart_csv(root: Path) -> Path:
    candidates = [root, root / "heart.csv", root / "heart" / "heart.csv"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataNotFound(f"heart.csv not found: give --data-root a CSV file (or a folder holding heart.csv) with "
                           f"the columns {', '.join(tabular.HEART_COLUMNS)}; tried {', '.join(map(str, candidates))}")
    return found


def _read_heart(root: Path) -> tuple[dict[str, np.ndarray], np.ndarray, Path]:
    path = find_heart_csv(root)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in tabular.HEART_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataNotFound(f"{path}: missing column(s) {', '.join(missing)}; the heart table needs "
                               f"{', '.join(tabular.HEART_COLUMNS)}")
        try:
            table, labels = tabular.parse_rows(list(reader))
        except ValueError as err:
            raise DataNotFound(f"{path}: {err}") from err
    return table, labels, path


def _heart_bundle(root: Path, fit: Callable[[dict[str, np.ndarray]], dict[str, Any]], how: str) -> DataBundle:
    table, labels, path = _read_heart(root)
    train_rows, test_rows = tabular.stratified_split(labels)
    train = {k: v[train_rows] for k, v in table.items()}
    spec = fit(train)

    def split(rows: np.ndarray) -> TensorData:
        features = tabular.encode({k: v[rows] for k, v in table.items()}, spec)
        return TensorData(torch.from_numpy(features), torch.from_numpy(labels[rows]))

    source = f"{path} ({len(labels)} rows; fixed stratified split, seed {tabular.SPLIT_SEED}; {how})"
    return DataBundle(split(train_rows), split(test_rows), tabular.HEART_CLASSES, source, tabular=spec)


def load_heart(root: Path) -> DataBundle:
    return _heart_bundle(root, tabular.fit_onehot,
                         "one-hot categories, numbers scaled with training-row statistics, 0 = not measured")


def load_heart_as_reported(root: Path) -> DataBundle:
    return _heart_bundle(root, lambda _: tabular.report_codes(), "category codes and raw numbers, as Report C")


DATASETS: dict[str, Callable[[Path], DataBundle]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "greek": load_greek,
    "heart": load_heart,
    "heart_report": load_heart_as_reported,
}
# How to bring an arbitrary picture into each image data set's form (travels in the manifest).
IMAGE_SPECS: dict[str, ImageSpec] = {
    "fashion_mnist": ImageSpec(height=28, width=28, channels=1, layout="garment"),
    "mnist": ImageSpec(height=28, width=28, channels=1, layout="digit"),
    "cifar10": ImageSpec(height=32, width=32, channels=3, layout="photo"),
    "greek": ImageSpec(height=28, width=28, channels=1, layout="digit"),  # Report C: into MNIST form
}


def load_data(cfg: ExperimentConfig, root: Path) -> DataBundle:
    """The experiment's train, validation and test splits, class subset and limits applied."""
    bundle = DATASETS[cfg.dataset](Path(root))
    train, test, names = bundle.train, bundle.test, bundle.class_names
    if cfg.classes is not None:
        train, test = select_classes(train, cfg.classes), select_classes(test, cfg.classes)
        names = tuple(names[c] for c in cfg.classes)
    train, val = train.spread(cfg.train_limit), None
    if cfg.validation_split:
        train, val = split_validation(train, cfg.validation_split)
    return DataBundle(train, test.spread(cfg.test_limit), names, bundle.source, val, bundle.tabular, bundle.test_note)
