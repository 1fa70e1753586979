"""Every registered experiment trains, reports, exports and publishes on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from training.files import sha256_file
from training.registry import EXPERIMENTS, get_config
from training.run import RunOptions, run_experiment
from training.store import latest, published_names, read_manifest

TINY = {"epochs": 1, "train_limit": 256, "test_limit": 64}


def run_tiny(name: str, root: Path, tmp: Path, **opts) -> dict:
    """Train `name` on the tiny data, first training any experiment it starts from."""
    cfg = get_config(name).replace(**TINY)
    if cfg.init_from and not (tmp / "runs" / cfg.init_from / "checkpoint.pt").exists():
        run_tiny(cfg.init_from, root, tmp)
    options = RunOptions(data_root=root, runs_dir=tmp / "runs", store=tmp / "store", device="cpu", **opts)
    return run_experiment(cfg, options)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_end_to_end(name: str, fashion_root: Path, tmp_path: Path) -> None:
    cfg = get_config(name)
    report = run_tiny(name, fashion_root, tmp_path)
    run_dir = tmp_path / "runs" / name

    for file in ("checkpoint.pt", "config.json", "metrics.jsonl", "report.md", "report.json",
                 "curves.png", "model.onnx"):
        assert (run_dir / file).is_file(), file
    figures = (("reconstructions.png",) if cfg.task == "reconstruct" else
               ("confusion_matrix.png", "first_predictions.png"))
    for file in figures:
        assert (run_dir / file).stat().st_size > 1000, file
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert report["export_check"]["max_abs_diff"] <= 1e-4

    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    (out,) = session.run(None, {"pixels": batch})
    if cfg.task == "classify":
        assert out.shape == (3, len(cfg.classes))
        np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
        assert report["metrics"]["classification"]["confusion_matrix"]
    else:
        assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1

    version = latest(tmp_path / "store", cfg.served_as) if cfg.served_as else None
    if cfg.served_as:
        manifest = read_manifest(version)
        assert manifest["name"] == cfg.served_as and manifest["version"] == "v1"
        assert manifest["sha256"] == sha256_file(version / "model.onnx")
        assert manifest["provenance"]["experiment"] == name
        assert manifest["preprocessing"]["image"] == {"height": 28, "width": 28, "channels": 1,
                                                      "layout": "garment"}
        assert (version / "MODEL_CARD.md").read_text().startswith(f"# {cfg.served_as} v1")
    else:
        published = [read_manifest(latest(tmp_path / "store", n)) for n in published_names(tmp_path / "store")]
        assert all(m["provenance"]["experiment"] != name for m in published)


def test_classifier_learns_the_synthetic_classes(fashion_root: Path, tmp_path: Path) -> None:
    """Not a smoke test only: three epochs on the separable fake data must beat chance by far."""
    cfg = get_config("fashion_cnn").replace(epochs=3, train_limit=None, test_limit=None)
    report = run_experiment(cfg, RunOptions(data_root=fashion_root, runs_dir=tmp_path, store=tmp_path / "s",
                                            device="cpu", publish=False))
    assert report["metrics"]["test_accuracy"] > 0.6  # chance is 0.2


def test_ae_classifier_starts_from_the_autoencoder(fashion_root: Path, tmp_path: Path) -> None:
    report = run_tiny("fashion_ae_classifier", fashion_root, tmp_path)
    assert "tensors from" in report["init_from"]
    assert "fashion_autoencoder" in report["init_from"]


def test_ae_classifier_without_autoencoder_says_what_to_do(fashion_root: Path, tmp_path: Path) -> None:
    from training.checkpoint import CheckpointError

    cfg = get_config("fashion_ae_classifier").replace(**TINY)
    with pytest.raises(CheckpointError, match="train it first"):
        run_experiment(cfg, RunOptions(data_root=fashion_root, runs_dir=tmp_path, device="cpu"))


def test_publishing_twice_makes_a_new_version(fashion_root: Path, tmp_path: Path) -> None:
    run_tiny("fashion_autoencoder", fashion_root, tmp_path)
    run_tiny("fashion_autoencoder", fashion_root, tmp_path)
    assert latest(tmp_path / "store", "fashion_reconstruction").name == "v2"
