"""Speed options on a CPU: bf16 with channels-last and torch.compile train, checkpoint, resume and export
like a plain run; which options each device and model gets by default (bitwise resume with them:
test_checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthetic import write_mnist
from training import fit, speed
from training.checkpoint import load_checkpoint
from training.export import export_onnx
from training.registry import get_config
from training.run import RunOptions, run_experiment
from training.speed import FP32, Speed, choose_speed

CONV = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
MLP = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))  # image in, no convs


def _opts(root: Path, runs: Path, **kw) -> RunOptions:
    return RunOptions(data_root=root, runs_dir=runs, device="cpu", publish=False, **kw)


@pytest.mark.parametrize("amx", [False, True], ids=["cpu-without-bf16-units", "cpu-with-amx"])
def test_auto_options_by_device_and_model(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    monkeypatch.setattr(speed, "cpu_multiplies_bf16", lambda: amx)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device name needs no GPU
    assert choose_speed("auto", False, cpu, CONV) == Speed(bf16=amx, channels_last=True)
    assert choose_speed("auto", False, cpu, MLP) == FP32  # no convs: nothing to move, no bf16 gain
    assert choose_speed("auto", False, cuda, CONV) == Speed(bf16=True, channels_last=True)
    assert choose_speed("auto", False, cuda, MLP) == Speed(bf16=True)
    assert choose_speed("fp32", True, cuda, CONV) == Speed(compile=True)
    assert choose_speed("fp32", False, cpu, CONV) == Speed(channels_last=True)
    assert choose_speed("bf16", False, cpu, CONV) == Speed(bf16=True, channels_last=True)
    assert choose_speed("bf16", False, cpu, MLP, channels_last=True) == Speed(bf16=True)  # asked, but no convs
    assert choose_speed("auto", False, cpu, CONV, channels_last=False) == Speed(bf16=amx)
    assert Speed(True, True, True).describe() == "bf16 autocast, channels-last, torch.compile"
    with pytest.raises(ValueError, match="known: auto, fp32, bf16"):
        choose_speed("fp16", False, cpu, CONV)



def test_cli_offers_the_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        fit.main(["--help"])
    out = capsys.readouterr().out
    assert "--precision {auto,fp32,bf16}" in out and "--compile" in out


def test_bf16_channels_last_trains_resumes_and_exports(tmp_path: Path) -> None:
    # A small conv net (bf16 is emulated, so slow, on CPUs without bf16 instructions) with a constant
    # schedule, so that a resume may extend it by an epoch.
    root = write_mnist(tmp_path / "data", n_train=128, n_test=32)
    cfg = get_config("mnist_cnn_small").replace(batch_size=32)
    checkpoint = tmp_path / "bf16" / cfg.name / "checkpoint.pt"
    fast = dict(precision="bf16", channels_last=True, artifacts=False)
    plain = run_experiment(cfg.replace(epochs=1), _opts(root, tmp_path / "fp32", artifacts=False, precision="fp32"))
    first = run_experiment(cfg.replace(epochs=1), _opts(root, tmp_path / "bf16", **fast))
    assert plain["speed"] == "fp32, channels-last" and "fp32" not in plain["hardware"]
    assert first["speed"] == "bf16 autocast, channels-last" and first["hardware"].endswith(first["speed"])
    after_one = load_checkpoint(checkpoint)
    convs = [w for w in after_one["model"].values() if w.dim() == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)  # saved as trained
    loss = after_one["history"][0]["train_loss"]
    plain_loss = load_checkpoint(tmp_path / "fp32" / cfg.name / "checkpoint.pt")["history"][0]["train_loss"]
    assert torch.isfinite(torch.tensor(loss)) and loss != plain_loss  # same start, other arithmetic

    run_experiment(cfg.replace(epochs=2), _opts(root, tmp_path / "bf16", resume=True, **fast))
    final = load_checkpoint(checkpoint)
    assert [r["epoch"] for r in final["history"]] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in final["history"])
    assert any(not torch.equal(final["model"][k], after_one["model"][k]) for k in final["model"])
    # Saved from channels-last weights, rebuilt as a plain fp32 model: exports and agrees with ONNX Runtime.
    assert export_onnx(checkpoint, tmp_path / "model.onnx")["argmax_identical"]


def test_compile_trains_and_checkpoints_the_plain_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # aot_eager traces forward and backward as inductor would, without its C++ build (about 20 s cold here).
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "aot_eager")
    root = write_mnist(tmp_path / "data", n_train=128, n_test=32)
    cfg = get_config("mnist_mlp").replace(epochs=1, batch_size=32)
    eager = run_experiment(cfg, _opts(root, tmp_path / "eager", artifacts=False))
    compiled = run_experiment(cfg, _opts(root, tmp_path / "compiled", artifacts=False, compile=True))
    assert compiled["speed"] == "fp32, torch.compile" and eager["speed"] == "fp32"
    a = load_checkpoint(tmp_path / "eager" / cfg.name / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "compiled" / cfg.name / "checkpoint.pt")["model"]
    assert list(b) == list(a)  # no "_orig_mod." prefix
    for key in a:  # the compiled step updated the very parameters the checkpoint holds
        torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=1e-3, msg=key)


