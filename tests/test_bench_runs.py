"""bench.runs end to end on tiny synthetic FashionMNIST and MNIST: both default experiments run whole and
land in the table (the timings themselves mean nothing here); time to target is summed epoch by epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import runs
from synthetic import write_fashion_mnist, write_mnist
from training.speed import cpu_multiplies_bf16


def test_time_to_target_counts_data_loading_and_every_epoch_up_to_the_first_at_target() -> None:
    records = [{"epoch": 1, "seconds": 2.0, "test_accuracy": 0.95},
               {"epoch": 2, "seconds": 3.0, "test_accuracy": 0.985},
               {"epoch": 3, "seconds": 4.0, "test_accuracy": 0.99}]
    assert runs.time_to_target(records, 0.5, 0.98) == (2, 5.5)
    assert runs.time_to_target(records, 0.5, 0.995) == (None, None)


def test_targets_default_to_issue_6_and_take_overrides() -> None:
    assert runs._targets(["fashion_cnn", "mnist_cnn32"], ["mnist_cnn32=0.5"]) == {"fashion_cnn": 0.98,
                                                                                 "mnist_cnn32": 0.5}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        runs._targets(["fashion_cnn"], ["mnist_cnn32=0.5"])


def test_both_default_runs_land_in_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_mnist(write_fashion_mnist(tmp_path, n_train=96, n_test=32), n_train=96, n_test=32)
    argv = ["--data-root", str(root), "--device", "cpu", "--epochs", "1", "--no-artifacts",
            "--target", "fashion_cnn=0"]
    runs.main(argv)
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`fashion_cnn`", "`mnist_cnn32`"}, out
    assert "| 0.00% | " in rows["`fashion_cnn`"] and "(epoch 1)" in rows["`fashion_cnn`"]  # 0 is reached at once
    speed = "bf16 autocast, channels-last" if cpu_multiplies_bf16() else "fp32, channels-last"  # auto's pick here
    assert "| 99.00% | " in rows["`mnist_cnn32`"] and rows["`mnist_cnn32`"].endswith(f"| {speed} |")
    assert f"`python -m bench.runs {' '.join(argv)}`" in out  # the command that reproduces the table
