"""Tiny synthetic data sets in the exact on-disk layouts the real loaders read."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
from PIL import Image

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


def write_fashion_mnist(root: Path, n_train: int = 400, n_test: int = 200, seed: int = 0,
                        folder: str = "FashionMNIST") -> Path:
    """FashionMNIST (or, with folder="MNIST", MNIST) in torchvision's raw layout under root/folder/raw; returns root."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        image_file, label_file = FASHION_FILES[split]
        write_idx(raw / image_file, class_images(labels, rng))
        write_idx(raw / label_file, labels.astype(np.uint8))
    return Path(root)


def write_mnist(root: Path, n_train: int = 400, n_test: int = 200, seed: int = 1) -> Path:
    return write_fashion_mnist(root, n_train, n_test, seed, folder="MNIST")


def write_photo_folder(folder: Path, classes: tuple[str, ...], per_class: int, seed: int = 0,
                       size: tuple[int, int] = (32, 32)) -> Path:
    """An ImageFolder of RGB pictures (JPEG and PNG): each class a colour, with noise."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = np.array([(c * 97) % 256, (c * 57 + 80) % 256, (c * 151 + 30) % 256])
        for i in range(per_class):
            noise = rng.integers(-30, 30, size=(*size[::-1], 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return folder


def write_letter_folder(folder: Path, classes: tuple[str, ...] = ("alpha", "beta", "gamma"),
                        per_class: int = 4, size: int = 133) -> Path:
    """Dark strokes on white paper, as the Greek-letter scans: a class is a stroke direction."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            paper = np.full((size, size), 255, np.uint8)
            offset = 20 + 6 * i
            if c == 0:
                paper[offset: offset + 60, 60:72] = 0       # vertical bar
            elif c == 1:
                paper[60:72, offset: offset + 60] = 0       # horizontal bar
            else:
                for k in range(60):                          # diagonal
                    paper[offset + k: offset + k + 8, offset + k: offset + k + 8] = 0
            Image.fromarray(paper).save(folder / name / f"{name}_{i:03d}.png")
    return folder


HEART_HEADER = ("Age", "Sex", "ChestPainType", "RestingBP", "Cholesterol", "FastingBS", "RestingECG", "MaxHR",
                "ExerciseAngina", "Oldpeak", "ST_Slope", "HeartDisease")


def write_heart_csv(path: Path, rows: int = 120, seed: int = 0) -> Path:
    """A heart.csv with the real columns; the label follows ExerciseAngina and Oldpeak; some Cholesterol is 0."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEART_HEADER)
        for i in range(rows):
            sick = int(rng.random() < 0.55)
            out.writerow([int(rng.integers(30, 75)), rng.choice(["M", "F"]), rng.choice(["TA", "ATA", "NAP", "ASY"]),
                          0 if i == 5 else int(rng.integers(100, 170)),
                          0 if i % 7 == 0 else int(rng.integers(150, 320)), int(rng.integers(0, 2)),
                          rng.choice(["Normal", "ST", "LVH"]), int(rng.integers(90, 190)), "Y" if sick else "N",
                          round(float(rng.random() * 2 + 1.5 * sick), 1), rng.choice(["Up", "Flat", "Down"]), sick])
    return path


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_all(root: Path) -> Path:
    """Every data set the registry names, tiny, in the layouts the loaders read; returns root."""
    write_fashion_mnist(root)
    write_mnist(root)
    write_photo_folder(root / "cifar10" / "train", CIFAR_CLASSES, per_class=12, seed=0)
    write_photo_folder(root / "cifar10" / "test", CIFAR_CLASSES, per_class=4, seed=1)
    write_letter_folder(root / "greek" / "train")
    write_heart_csv(root / "heart" / "heart.csv")
    return root
