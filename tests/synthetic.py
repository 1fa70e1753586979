"""Tiny synthetic data sets in the exact on-disk layouts the real loaders read."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """(N, size, size) uint8: a bright bar whose position encodes the class, on a dark noisy field."""
    images = rng.integers(0, 40, size=(len(labels), size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        top = 2 + (int(label) % 5) * 5
        left = 4 if label < 5 else 16
        images[i, top: top + 4, left: left + 8] = 255
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as in the MNIST family: magic (0, 0, 0x08 for ubyte, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, n_train: int = 400, n_test: int = 200, seed: int = 0) -> Path:
    """FashionMNIST in torchvision's raw layout under root/FashionMNIST/raw; returns root."""
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        image_file, label_file = FASHION_FILES[split]
        write_idx(raw / image_file, class_images(labels, rng))
        write_idx(raw / label_file, labels.astype(np.uint8))
    return Path(root)
