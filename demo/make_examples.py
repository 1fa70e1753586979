"""Regenerate demo/examples/: a handful of small PNGs from the official test sets, and heart rows.

    python -m demo.make_examples                      # reads the real data; writes demo/examples/

Sources: FashionMNIST's test set (Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist),
MNIST's and CIFAR-10's test sets and the Greek letters under --data-root (default /work/shared/data, the
layout its README describes), heart.csv's test split (training.tabular.stratified_split). The Greek set has
no test split: its examples are training scans, as Report C measured. examples.json lists every file with
its true label and where it came from; the demo reads only that index and the files it names.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from training.registry import FASHION_CLASSES, FASHION_FIVE, MNIST_CLASSES

from .views import EXAMPLES_DIR, INDEX_FILE

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
PER_CLASS = {"fashion_mnist": 2, "mnist": 1, "cifar10": 1, "greek": 1}  # images per class: a few KB in all
HEART_ROWS = 4  # test-split rows, both outcomes


def read_idx(data: bytes) -> np.ndarray:
    """An IDX array (MNIST family): magic (0, 0, 0x08, ndim), big-endian dims, uint8 values."""
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def first_per_class(labels: np.ndarray, classes: tuple[int, ...], per_class: int) -> list[int]:
    """Indices of the first `per_class` test images of each class, in class order."""
    return [int(i) for c in classes for i in np.flatnonzero(labels == c)[:per_class]]


def save_png(pixels: np.ndarray, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name, optimize=True)
    return f"{folder.name}/{name}"


def slug(label: str) -> str:
    return label.lower().replace("/", "-").replace(" ", "-")


def idx_examples(dataset: str, images: bytes, labels: bytes, names: tuple[str, ...], classes: tuple[int, ...],
                 source: str, out: Path) -> list[dict]:
    pixels, targets = read_idx(images), read_idx(labels)
    found = []
    for i in first_per_class(targets, classes, PER_CLASS[dataset]):
        label = names[targets[i]]
        file = save_png(pixels[i], out / dataset, f"{slug(label)}-{i:05d}.png")
        found.append({"file": file, "label": label, "source": f"{source} test image {i}"})
    return found


def cifar_examples(archive: Path, out: Path) -> list[dict]:
    """The first test JPEG of each class in the ImageFolder archive, re-encoded losslessly as PNG."""
    chosen: dict[str, tuple[str, bytes]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:  # streamed, to the end: the first name of each class is known only there
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[0] == "test":
                if parts[1] not in chosen or parts[2] < chosen[parts[1]][0]:
                    chosen[parts[1]] = (parts[2], tar.extractfile(member).read())
    found = []
    for label in sorted(chosen):
        name, data = chosen[label]
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        file = save_png(pixels, out / "cifar10", f"{label}-{Path(name).stem}.png")
        found.append({"file": file, "label": label, "source": f"CIFAR-10 test/{label}/{name} (JPEG copy)"})
    return found


def greek_examples(folder: Path, out: Path) -> list[dict]:
    found = []
    for letter in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        for path in sorted((folder / letter).glob("*.png"))[: PER_CLASS["greek"]]:
            file = save_png(np.asarray(Image.open(path).convert("L")), out / "greek", path.name)
            found.append({"file": file, "label": letter, "source": f"Greek letters train/{letter}/{path.name}"})
    return found


def heart_examples(csv_file: Path) -> list[dict]:
    from training.tabular import HEART_FEATURES, HEART_TARGET, parse_rows, stratified_split

    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    _, labels = parse_rows(rows)
    _, test = stratified_split(labels)
    picked = [i for outcome in (0, 1) for i in test[labels[test] == outcome][: HEART_ROWS // 2]]
    found = []
    for i in sorted(picked):
        row = {name: _number_or_text(rows[i][name]) for name in HEART_FEATURES}
        found.append({"row": row, "label": ["Normal", "HeartDisease"][int(rows[i][HEART_TARGET])],
                      "source": f"heart.csv line {i + 2} (test split)"})
    return found


def _number_or_text(value: str) -> int | float | str:
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/work/shared/data"),
                        help="MNIST/raw, cifar10/cifar10-jpeg.tar.gz, greek/train, heart/heart.csv")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    root, out = args.data_root, args.out

    def gz(name: str) -> bytes:
        return gzip.decompress((DEBIAN_FASHION / f"{name}.gz").read_bytes())

    index = {
        "fashion_mnist": idx_examples("fashion_mnist", gz("t10k-images-idx3-ubyte"), gz("t10k-labels-idx1-ubyte"),
                                      FASHION_CLASSES, FASHION_FIVE, "FashionMNIST", out),
        "mnist": idx_examples("mnist", (root / "MNIST/raw/t10k-images-idx3-ubyte").read_bytes(),
                              (root / "MNIST/raw/t10k-labels-idx1-ubyte").read_bytes(),
                              MNIST_CLASSES, tuple(range(10)), "MNIST", out),
        "cifar10": cifar_examples(root / "cifar10" / "cifar10-jpeg.tar.gz", out),
        "greek": greek_examples(root / "greek" / "train", out),
        "heart": heart_examples(root / "heart" / "heart.csv"),
    }
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    total = sum((out / e["file"]).stat().st_size for items in index.values() for e in items if "file" in e)
    print(f"wrote {sum(map(len, index.values()))} examples ({total / 1024:.0f} KiB of PNG) to {out}")


if __name__ == "__main__":
    main()
