"""Finding and shaping the data: sources in order, the documented error, the class subset."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from synthetic import write_fashion_mnist, write_photo_folder
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


def test_a_limit_spreads_over_a_split_stored_class_by_class() -> None:
    """An image folder lists its classes one after the other: the first N would all be one class."""
    split = TensorData(torch.arange(30).reshape(30, 1), torch.arange(3).repeat_interleave(10))
    assert split.spread(6).labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert split.spread(None) is split and split.spread(30) is split and split.spread(99) is split
    assert len(set(split.spread(29).inputs.flatten().tolist())) == 29  # no example twice


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


def test_a_damaged_debian_file_leaves_no_partial_or_temp_file(tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in data_module.FASHION_FILES:
        (debian / f"{name}.gz").write_bytes(gzip.compress(bytes(5000))[:-20])  # cut short: gunzip fails late
    with pytest.raises(EOFError):
        data_module._unpack_debian_fashion(debian, tmp_path / "root")
    assert list((tmp_path / "root" / "FashionMNIST" / "raw").iterdir()) == []


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


def test_mnist_loads_with_digit_names_and_missing_mnist_lists_the_options(data_root: Path, tmp_path: Path) -> None:
    bundle = load_data(get_config("mnist_cnn"), data_root)
    assert bundle.class_names == tuple("0123456789") and bundle.input_shape == (1, 28, 28)
    with pytest.raises(DataNotFound) as err:
        load_data(get_config("mnist_cnn"), tmp_path)
    message = str(err.value)
    assert message.startswith("MNIST not found") and "MNIST/raw" in message and "tests never download" in message


def test_users_own_image_folders_are_loaded_generically(tmp_path: Path) -> None:
    """Any class names and picture sizes: prepared to the model's 32x32 RGB by the shared preprocessing."""
    write_photo_folder(tmp_path / "mine" / "train", ("cats", "dogs", "owls"), per_class=3, size=(48, 40))
    write_photo_folder(tmp_path / "mine" / "test", ("cats", "dogs", "owls"), per_class=2, size=(20, 20))
    bundle = load_data(get_config("cifar_cnn2"), tmp_path / "mine")
    assert bundle.class_names == ("cats", "dogs", "owls") and bundle.input_shape == (3, 32, 32)
    assert (len(bundle.train), len(bundle.test)) == (9, 6) and bundle.train.images.dtype == torch.uint8
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    write_photo_folder(tmp_path / "mine" / "test", ("zebras",), per_class=1)
    with pytest.raises(DataNotFound, match="differ from the training split"):
        load_data(get_config("cifar_cnn2"), tmp_path / "mine")


def test_cifar_images_keep_their_pixels(data_root: Path) -> None:
    from PIL import Image

    bundle = load_data(get_config("cifar_cnn1"), data_root)
    png = np.array(Image.open(data_root / "cifar10" / "train" / "airplane" / "000.png"))
    assert torch.equal(bundle.train.images[0], torch.from_numpy(png).permute(2, 0, 1))


def test_missing_cifar_lists_the_options(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound) as err:
        load_data(get_config("cifar_cnn2"), tmp_path)
    message = str(err.value)
    assert message.startswith("CIFAR-10 not found") and "ImageFolder" in message
    assert "cifar-10-batches-py" in message and "tests never download" in message


def test_validation_split_is_fixed_and_disjoint(fashion_root: Path) -> None:
    cfg = get_config("fashion_grid")
    a, b = load_data(cfg, fashion_root), load_data(cfg.replace(seed=5), fashion_root)
    assert len(a.val) == round(len(a.train) / 5) and len(a.train) + len(a.val) == 400
    assert torch.equal(a.val.images, b.val.images)  # --seed does not move it
    flat = lambda d: {bytes(x) for x in d.images.flatten(1).numpy()}  # noqa: E731
    assert not flat(a.train) & flat(a.val)
