"""Finding and shaping the data: sources in order, the documented error, the class subset."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from synthetic import write_fashion_mnist
from training import data as data_module
from training.data import DataNotFound, TensorData, load_data, select_classes
from training.registry import FASHION_CLASSES, get_config


def test_select_classes_keeps_and_renumbers() -> None:
    data = TensorData(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    kept = select_classes(data, (1, 3, 5, 7, 9))
    assert kept.labels.tolist() == [0, 1, 2, 3, 4]
    assert kept.images.flatten().tolist() == [1, 3, 5, 7, 9]


def test_five_class_subset_has_real_names(fashion_root: Path) -> None:
    bundle = load_data(get_config("fashion_cnn"), fashion_root)
    assert bundle.class_names == ("Trouser", "Dress", "Sandal", "Sneaker", "Ankle boot")
    assert set(bundle.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert bundle.train.images.dtype == torch.uint8 and bundle.input_shape == (1, 28, 28)
    full = load_data(get_config("fashion_cnn").replace(classes=None), fashion_root)
    assert full.class_names == FASHION_CLASSES and len(full.train) == 2 * len(bundle.train)


def test_limits_cut_the_splits(fashion_root: Path) -> None:
    bundle = load_data(get_config("fashion_cnn").replace(train_limit=10, test_limit=5), fashion_root)
    assert (len(bundle.train), len(bundle.test)) == (10, 5)


def test_debian_package_files_are_unpacked(tmp_path: Path, monkeypatch) -> None:
    source = write_fashion_mnist(tmp_path / "source") / "FashionMNIST" / "raw"
    debian = tmp_path / "debian"
    debian.mkdir()
    for f in source.iterdir():
        (debian / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_DIR", debian)
    bundle = load_data(get_config("fashion_cnn"), tmp_path / "empty-root")
    assert "Debian" in bundle.source and len(bundle.train) == 200
    assert (tmp_path / "empty-root" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_download_is_the_last_resort(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_download(root: Path) -> None:
        calls.append(root)
        write_fashion_mnist(root)

    monkeypatch.setattr(data_module, "_fashion_download", fake_download)
    bundle = load_data(get_config("fashion_cnn"), tmp_path)
    assert calls == [tmp_path] and "download" in bundle.source


def test_missing_data_lists_all_three_options(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound) as err:
        load_data(get_config("fashion_cnn"), tmp_path / "nothing-here")
    message = str(err.value)
    assert "--data-root" in message and "apt-get install dataset-fashion-mnist" in message
    assert "download" in message and "tests never download" in message
