"""Shared fixtures: every test runs offline on tiny synthetic data in temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic import write_all, write_fashion_mnist
from training import data as data_module


def _no_download(root: Path) -> None:
    raise OSError("tests never download")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hide Debian's copy and torchvision's download, so only the test's own files are read."""
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_DIR", tmp_path_factory.getbasetemp() / "no-debian")
    monkeypatch.setattr(data_module, "_fashion_download", _no_download)
    monkeypatch.setattr(data_module, "_mnist_download", _no_download)
    monkeypatch.setattr(data_module, "_cifar_download", _no_download)


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion-data"))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root holding every data set the registry uses (FashionMNIST, MNIST, CIFAR-10, Greek, heart)."""
    return write_all(tmp_path_factory.mktemp("all-data"))
