"""Every registered experiment trains, reports, exports and publishes on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.build import model_for, seed_everything
from training.checkpoint import load_checkpoint
from training.data import IMAGE_SPECS
from training.files import sha256_file
from training.registry import EXPERIMENTS, get_config
from training.run import RunOptions, run_experiment
from training.store import latest, published_names, read_manifest

# Tests never download pretrained weights: those experiments run from scratch (test_transfer checks the rest).
TINY = {"epochs": 1, "train_limit": 256, "test_limit": 64, "pretrained": None}
SMALLER = {"cifar_resnet50": {"train_limit": 32, "test_limit": 16}}  # ResNet-50 on a CPU: keep the suite quick


def run_tiny(name: str, root: Path, tmp: Path, **opts) -> dict:
    """Train `name` on the tiny data, first training any experiment it starts from."""
    cfg = get_config(name).replace(**{**TINY, **SMALLER.get(name, {})})
    if cfg.init_from and not (tmp / "runs" / cfg.init_from / "checkpoint.pt").exists():
        run_tiny(cfg.init_from, root, tmp)
    options = RunOptions(data_root=root, runs_dir=tmp / "runs", store=tmp / "store", device="cpu", **opts)
    return run_experiment(cfg, options)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_end_to_end(name: str, data_root: Path, tmp_path: Path) -> None:
    cfg = get_config(name)
    report = run_tiny(name, data_root, tmp_path)
    run_dir = tmp_path / "runs" / name

    for file in ("checkpoint.pt", "config.json", "metrics.jsonl", "report.md", "report.json",
                 "curves.png", "loss_vs_examples.png", "model.onnx"):
        assert (run_dir / file).is_file(), file
    spec = load_checkpoint(run_dir / "checkpoint.pt")["model_spec"]
    image = len(spec["input_shape"]) == 3
    figures = (("reconstructions.png",) if cfg.task == "reconstruct" else
               ("confusion_matrix.png", "first_predictions.png", "training_samples.png") if image else
               ("confusion_matrix.png",))
    for file in figures:
        assert (run_dir / file).stat().st_size > 1000, file
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    text = (run_dir / "report.md").read_text()
    assert "a smoke run" in text and "beaten" not in text and "not reached" not in text  # cut data: no verdict
    assert report["speed"] in text  # fp32 or the options taken
    assert report["export_check"]["max_abs_diff"] <= 1e-4

    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((3, *spec["input_shape"]), dtype=np.float32)
    (out,) = session.run(None, {session.get_inputs()[0].name: batch})
    if cfg.task == "reconstruct":
        assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    elif cfg.loss == "cross_entropy":
        assert out.shape == (3, len(spec["class_names"]))
        np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
    else:  # one probability of the second class
        assert out.shape == (3, 1) and 0 <= out.min() and out.max() <= 1
    if cfg.task == "classify":
        assert report["metrics"]["classification"]["confusion_matrix"]

    if cfg.freeze:  # transfer learning: the frozen part is exactly the source run's, the rest trained
        source = load_checkpoint(tmp_path / "runs" / cfg.init_from / "checkpoint.pt")["model"]
        trained = load_checkpoint(run_dir / "checkpoint.pt")["model"]
        seed_everything(cfg, torch.device("cpu"))  # the run's own first draw, before any step
        start = model_for(cfg.replace(pretrained=None), tuple(spec["input_shape"]), len(spec["class_names"]))
        frozen = [k for k in trained if k.startswith(cfg.freeze)]
        free = [k for k, _ in start.named_parameters() if not k.startswith(cfg.freeze)]
        assert frozen and free and all(torch.equal(trained[k], source[k]) for k in frozen)
        assert all(not torch.equal(trained[k], start.state_dict()[k]) for k in free)
    if cfg.heldout_folds:
        cv = report["metrics"]["cross_validation"]
        assert cv["folds"] == min(cfg.heldout_folds, report["train_size"]) and 0 <= cv["heldout_accuracy"] <= 1
        assert "## Held-out" in (run_dir / "report.md").read_text()

    version = latest(tmp_path / "store", cfg.served_as) if cfg.served_as else None
    if cfg.served_as:
        manifest = read_manifest(version)
        assert manifest["name"] == cfg.served_as and manifest["version"] == "v1"
        assert manifest["sha256"] == sha256_file(version / "model.onnx")
        assert manifest["provenance"]["experiment"] == name
        if image:
            assert manifest["preprocessing"]["image"] == IMAGE_SPECS[cfg.dataset].to_dict()
            assert manifest["input"] == {"name": "pixels", "shape": [None, *spec["input_shape"]],
                                         "dtype": "float32", "range": [0.0, 1.0]}
        else:
            assert manifest["preprocessing"]["tabular"] == spec["tabular"]
        card = (version / "MODEL_CARD.md").read_text()
        assert card.startswith(f"# {cfg.served_as} v1")
        assert ("there is no test split" in card) == (cfg.dataset == "greek"), card  # only the letters lack one
    else:
        published = [read_manifest(latest(tmp_path / "store", n)) for n in published_names(tmp_path / "store")]
        assert all(m["provenance"]["experiment"] != name for m in published)


def test_classifier_learns_the_synthetic_classes(fashion_root: Path, tmp_path: Path) -> None:
    """Not a smoke test only: three epochs on the separable fake data must beat chance by far."""
    cfg = get_config("fashion_cnn").replace(epochs=3, train_limit=None, test_limit=None)
    report = run_experiment(cfg, RunOptions(data_root=fashion_root, runs_dir=tmp_path, store=tmp_path / "s",
                                            device="cpu", publish=False))
    assert report["metrics"]["test_accuracy"] > 0.6  # chance is 0.2
    verdict = "**beaten**" if report["metrics"]["test_accuracy"] >= cfg.target else "**not reached**"
    assert f"Report figure 97.91%: {verdict}" in (tmp_path / "fashion_cnn" / "report.md").read_text()


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
