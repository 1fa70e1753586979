"""The weights' moving average: its arithmetic, and that a run scores, checkpoints and exports it."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import nn

from training.averaging import WeightAverage
from training.build import model_from_checkpoint
from training.checkpoint import load_checkpoint
from training.loop import as_pixels, evaluate
from training.data import load_data
from training.registry import get_config
from training.run import RunOptions, run_experiment


def test_average_follows_the_exponential_rule_and_copies_integer_buffers() -> None:
    source = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(source, decay=0.99)
    average.steps = 5_000  # past the warm-up: the decay is 0.99 itself
    start = {k: v.clone() for k, v in source.state_dict().items()}
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    source.train()(torch.randn(8, 3))  # BatchNorm: new running statistics, batch count 1
    average.update()

    got = average.model.state_dict()
    assert got.keys() == source.state_dict().keys()  # loads into a fresh model as it is
    for key, now in source.state_dict().items():
        if now.is_floating_point():
            assert torch.allclose(got[key], 0.99 * start[key] + 0.01 * now), key
        else:
            assert torch.equal(got[key], now), key  # num_batches_tracked: copied, never blended
    assert not any(p.requires_grad for p in average.model.parameters()) and average.steps == 5_001


def test_the_decay_warms_up_so_a_short_run_is_not_scored_on_its_initial_weights() -> None:
    source = nn.Linear(2, 1)
    with torch.no_grad():
        source.weight.fill_(0.0)
    average = WeightAverage(source, decay=0.99)
    assert average.current_decay() == pytest.approx(2 / 11)  # step 1: (1 + 1) / (10 + 1)
    with torch.no_grad():
        source.weight.fill_(1.0)  # trained to 1 at once, then held there
    for _ in range(16):  # a --quick run's steps
        average.update()
    assert average.model.weight.min() > 0.99  # a plain 0.99 would give 0.15: 85% initial weights
    average.steps = 889
    assert average.current_decay() == pytest.approx(0.99)  # (1 + 890) / (10 + 890): warm-up over


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(nn.Linear(2, 2), decay)


def test_a_run_scores_checkpoints_and_exports_the_average(fashion_root: Path, tmp_path: Path) -> None:
    cfg = get_config("fashion_cnn").replace(train_limit=128, test_limit=32, batch_size=32, epochs=2,
                                            ema_decay=0.5)
    report = run_experiment(cfg, RunOptions(data_root=fashion_root, runs_dir=tmp_path, device="cpu",
                                            store=tmp_path / "store"))
    saved = load_checkpoint(tmp_path / cfg.name / "checkpoint.pt")
    assert any(not torch.equal(saved["model"][k], v) for k, v in saved["raw_model"].items())
    assert saved["average_steps"] == 2 * 4  # 128 images, batch 32, 2 epochs

    averaged, _ = model_from_checkpoint(saved)
    test = load_data(cfg, fashion_root).test
    assert report["metrics"]["test_accuracy"] == pytest.approx(evaluate(averaged, test, cfg)["test_accuracy"])

    session = ort.InferenceSession(str(tmp_path / cfg.name / "model.onnx"), providers=["CPUExecutionProvider"])
    pixels = as_pixels(test.inputs[:8])
    onnx_probs = session.run(None, {session.get_inputs()[0].name: pixels.numpy()})[0]
    with torch.no_grad():
        torch_probs = averaged(pixels).softmax(1).numpy()
    assert abs(onnx_probs - torch_probs).max() < 1e-4
    card = (Path(report["published"]) / "MODEL_CARD.md").read_text()
    assert "the weights are their moving average over training (decay 0.5 per step)" in card
