"""Checkpoints: resume equals an uninterrupted run, crashes never leave a torn file, damage is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from training import files, store
from training import run as run_module
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.registry import get_config
from training.run import RunError, RunOptions, run_experiment

# Dropout, BatchNorm, rotation and noise: every source of randomness a resume must restore.
CFG = get_config("fashion_cnn_bn").replace(train_limit=128, test_limit=32, batch_size=32, epochs=3)


def _opts(root: Path, runs: Path, **kw) -> RunOptions:
    return RunOptions(data_root=root, runs_dir=runs, device="cpu", publish=False, **kw)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9], ids=["trained-weights", "moving-average"])
def test_resume_ends_with_the_same_weights(fashion_root: Path, tmp_path: Path, ema_decay: float) -> None:
    cfg = CFG.replace(ema_decay=ema_decay)  # with a moving average, "model" holds it and "raw_model" the rest
    run_experiment(cfg, _opts(fashion_root, tmp_path / "straight"))
    run_experiment(cfg.replace(epochs=1), _opts(fashion_root, tmp_path / "split"))
    # A run planned for 3 epochs that stopped after 1: rewrite its plan, as a kill would leave it.
    saved = load_checkpoint(tmp_path / "split" / cfg.name / "checkpoint.pt")
    saved["config"]["epochs"] = 3
    save_checkpoint(tmp_path / "split" / cfg.name / "checkpoint.pt", saved)
    half_written = tmp_path / "split" / cfg.name / ".checkpoint.pt.k1ll3d.tmp"  # what a kill mid-write leaves
    half_written.write_bytes(b"half a checkpoint")
    report = run_experiment(cfg, _opts(fashion_root, tmp_path / "split", resume=True))
    assert not half_written.exists()
    assert report["command"].endswith("(then 1 x --resume)")

    a = load_checkpoint(tmp_path / "straight" / cfg.name / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / cfg.name / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    weights = ["model", "raw_model"] if ema_decay else ["model"]
    assert ("raw_model" in a) == bool(ema_decay)
    for which in weights:
        for key, tensor in a[which].items():
            assert torch.equal(tensor, b[which][key]), (which, key)
    assert [r["epoch"] for r in b["history"]] == [1, 2, 3]
    lines = (tmp_path / "split" / cfg.name / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads((tmp_path / "split" / cfg.name / "config.json").read_text())["epochs"] == 3


def test_a_new_run_clears_the_previous_runs_results(fashion_root: Path, tmp_path: Path, monkeypatch) -> None:
    run_experiment(CFG.replace(epochs=1), _opts(fashion_root, tmp_path))
    run_dir = tmp_path / CFG.name
    assert (run_dir / "report.json").is_file() and (run_dir / "model.onnx").is_file() and list(run_dir.glob("*.png"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    def cleared() -> bool:  # nothing of the last run passes for this one's (training.report, sweeps)
        return not (list(run_dir.glob("report.*")) or (run_dir / "model.onnx").exists() or list(run_dir.glob("*.png")))

    monkeypatch.setattr(run_module, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):  # the next run is killed in its first epoch
        run_experiment(CFG, _opts(fashion_root, tmp_path))
    assert cleared()

    monkeypatch.undo()  # a finished run taken further with --resume --epochs, killed on the way
    constant = CFG.replace(epochs=1, schedule="constant")
    run_experiment(constant, _opts(fashion_root, tmp_path))
    monkeypatch.setattr(run_module, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(constant.replace(epochs=2), _opts(fashion_root, tmp_path, resume=True))
    assert cleared()


def test_resume_refuses_a_different_config(fashion_root: Path, tmp_path: Path) -> None:
    run_experiment(CFG.replace(epochs=1), _opts(fashion_root, tmp_path))
    with pytest.raises(RunError, match="differs in lr"):
        run_experiment(CFG.replace(epochs=1, lr=0.5), _opts(fashion_root, tmp_path, resume=True))


def test_resume_without_checkpoint_is_clear(fashion_root: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run_experiment(CFG, _opts(fashion_root, tmp_path, resume=True))


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def power_cut(fd: int) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(files.os, "fsync", power_cut)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_flipped_byte_is_refused(tmp_path: Path, where: float) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(5000, dtype=torch.float32)})
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted|unreadable"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_crash_during_publish_leaves_the_store_valid(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"first")
    v1 = store.publish_model(tmp_path / "store", "fashion", model, {"task": "classify"}, "# card {version}")
    model.write_bytes(b"second")

    def crash(src, dst):
        raise OSError("simulated crash at the rename")

    monkeypatch.setattr(store.os, "rename", crash)
    with pytest.raises(OSError, match="simulated"):
        store.publish_model(tmp_path / "store", "fashion", model, {"task": "classify"}, "# card {version}")
    monkeypatch.undo()
    assert store.versions(tmp_path / "store", "fashion") == [v1]
    assert sorted(p.name for p in (tmp_path / "store" / "fashion").iterdir()) == ["v1"]
    manifest = store.read_manifest(v1)
    assert manifest["sha256"] == files.sha256_file(v1 / "model.onnx") and manifest["version"] == "v1"
    assert (v1 / "MODEL_CARD.md").read_text() == "# card v1"


def test_half_written_version_is_invisible(tmp_path: Path) -> None:
    (tmp_path / "fashion" / ".incoming-abc").mkdir(parents=True)
    (tmp_path / "fashion" / "v7-broken").mkdir()
    assert store.versions(tmp_path, "fashion") == [] and store.published_names(tmp_path) == []
    assert os.listdir(tmp_path / "fashion")


def test_published_and_written_files_are_as_readable_as_a_plain_write(tmp_path: Path) -> None:
    # tempfile's private 0600/0700 would hide a published model from a service running as another user.
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights")
    plain_file = model.stat().st_mode & 0o777
    (tmp_path / "plain").mkdir()
    plain_dir = (tmp_path / "plain").stat().st_mode & 0o777
    version = store.publish_model(tmp_path / "store", "fashion", model, {"task": "classify"}, "# card")
    assert version.stat().st_mode & 0o777 == plain_dir
    for name in ("model.onnx", "manifest.json", "MODEL_CARD.md"):
        assert (version / name).stat().st_mode & 0o777 == plain_file, name
    files.atomic_write_text(tmp_path / "report.md", "# report")
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == plain_file
