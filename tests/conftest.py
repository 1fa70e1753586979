"""Shared fixtures: every test runs offline on tiny synthetic data in temporary folders.

Tests that start a server or a browser, or train a model, are marked `slow` here (by module, by the
fixtures that do those things, or by hand with @pytest.mark.slow); `pytest -m "not slow"` runs the rest,
the unit tests, in about a minute. CI runs everything.
"""

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


# Every test of these starts a server or a browser, or trains a model.
SLOW_MODULES = {"test_averaging", "test_bench_runs", "test_bench_serve", "test_bench_train", "test_checkpoint",
                "test_cli", "test_demo", "test_demo_browser", "test_demo_guard", "test_demo_mount", "test_deploy",
                "test_distributed", "test_experiments", "test_layering", "test_promotion", "test_reliability",
                "test_serving_e2e", "test_speed_options", "test_sweep", "test_tensorboard", "test_transfer",
                "test_verify_and_results"}
# Fixtures that train models (the served stores, the demo's) or start servers.
SLOW_FIXTURES = {"store", "client", "models", "demo_store", "http", "server", "api_schema", "served_root",
                 "test_split", "provider", "demo", "fashion_root", "data_root"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
