"""TensorBoard logs, read back with TensorBoard's own event reader: curves, images, HParams, resumes, failures."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from training import tracking
from training.checkpoint import load_checkpoint, save_checkpoint
from training.registry import get_config
from training.run import RunOptions, run_experiment

CFG = get_config("fashion_cnn_bn").replace(train_limit=128, test_limit=32, batch_size=32, epochs=2)


def read_events(folder: Path) -> event_accumulator.EventAccumulator:
    """Every event file in `folder`, as TensorBoard itself would show the run."""
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0,
                                                                           event_accumulator.IMAGES: 0})
    return events.Reload()


def steps(events: event_accumulator.EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


def hparams_of(events: event_accumulator.EventAccumulator) -> dict:
    """The HParams entry's hyperparameters, as the HParams dashboard reads them."""
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def _opts(root: Path, runs: Path, **kw) -> RunOptions:
    return RunOptions(data_root=root, runs_dir=runs, device="cpu", publish=False, **kw)


def test_a_run_logs_curves_figures_and_its_hparams(fashion_root: Path, tmp_path: Path) -> None:
    report = run_experiment(CFG, _opts(fashion_root, tmp_path))
    events = read_events(tmp_path / CFG.name)
    tags = events.Tags()
    for tag in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "epoch_seconds"):
        assert steps(events, tag) == [1, 2], tag
    assert events.Scalars("test_accuracy")[-1].value == report["metrics"]["test_accuracy"]
    assert events.Scalars("final/test_accuracy")[0].value == report["metrics"]["test_accuracy"]
    assert {"confusion_matrix", "confident_mistakes"} <= set(tags["images"])
    assert events.Images("confusion_matrix")[0].width > 100
    params = hparams_of(events)
    assert params["name"] == CFG.name and params["lr"] == CFG.lr and params["model.dropout"] == 0.3
    assert params["smoke_run"] == "yes"  # on 128 training images: marked, so it can be filtered out
    assert "smoke run" in str(events.Tensors("run/text_summary")[0].tensor_proto.string_val[0])


def test_the_autoencoder_logs_its_reconstructions(fashion_root: Path, tmp_path: Path) -> None:
    cfg = get_config("fashion_autoencoder").replace(train_limit=128, test_limit=32, epochs=1)
    run_experiment(cfg, _opts(fashion_root, tmp_path))
    events = read_events(tmp_path / cfg.name)
    assert "reconstructions" in events.Tags()["images"] and steps(events, "test_mse") == [1]


def test_a_resumed_run_continues_its_curves_without_duplicates(fashion_root: Path, tmp_path: Path) -> None:
    cfg = CFG.replace(epochs=3, schedule="constant")
    run_experiment(cfg.replace(epochs=2), _opts(fashion_root, tmp_path))
    # Killed after logging epoch 2 but before its checkpoint: the checkpoint says epoch 1.
    path = tmp_path / cfg.name / "checkpoint.pt"
    saved = load_checkpoint(path)
    saved.update(epoch=1, history=saved["history"][:1])
    save_checkpoint(path, saved)
    run_experiment(cfg, _opts(fashion_root, tmp_path, resume=True))
    events = read_events(tmp_path / cfg.name)
    assert steps(events, "train_loss") == [1, 2, 3]
    assert steps(events, "test_accuracy") == [1, 2, 3]

    run_experiment(cfg.replace(epochs=1), _opts(fashion_root, tmp_path))  # a new run starts new curves
    assert steps(read_events(tmp_path / cfg.name), "train_loss") == [1]


def test_a_full_disk_stops_logging_once_and_the_run_goes_on(fashion_root: Path, tmp_path: Path, monkeypatch,
                                                             caplog) -> None:
    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("torch.utils.tensorboard.writer.SummaryWriter.add_scalar", disk_full)
    with caplog.at_level(logging.WARNING, logger="training"):
        report = run_experiment(CFG.replace(epochs=1), _opts(fashion_root, tmp_path))
    assert report["epochs"] == 1 and (tmp_path / CFG.name / "report.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]


def test_off_rank_zero_nothing_is_written(tmp_path: Path) -> None:
    board = tracking.Board(tmp_path, enabled=False)
    board.scalars({"x": 1.0}, 1)
    board.close()
    assert list(tmp_path.iterdir()) == []
