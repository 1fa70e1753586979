"""bench.train, bench.train_loop, bench.train_step and bench.weight_average end to end on tiny synthetic
FashionMNIST: every contender or variant trains, gets scored and lands in the printed table (the timings
themselves mean nothing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import train, train_loop, train_step, weight_average
from synthetic import write_fashion_mnist


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("data"), n_train=200, n_test=100)


def test_time_to_target_table_has_both_recipes(root: Path, capsys: pytest.CaptureFixture) -> None:
    train.main(["--data-root", str(root), "--device", "cpu", "--target", "0"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| Report A") or line.startswith("| ours")]
    assert len(rows) == 2, out
    assert all("| yes |" in row for row in rows), out  # a target of 0 is reached after the first chunk
    assert rows[0].endswith("| 1.00x |") and rows[1].rstrip(" |").endswith("x"), out
    assert "--target 0" in out  # the command that reproduces the table is printed with it
    ours_line = next(line for line in out.splitlines() if line.startswith("  ours:"))
    assert "(weights as trained: " in ours_line, out  # ours is scored through its average, the raw shown too
    assert "weights' moving average 0.99" in rows[1], out


def test_an_unreached_target_is_a_lower_bound() -> None:
    theirs = train.Contender("Report A", None, None, None, iter(()), seconds=8.0, samples=10, accuracy=0.5,
                             stopped="cap reached")
    mine = train.Contender("ours", None, None, None, iter(()), seconds=2.0, samples=10, accuracy=0.99, reached=True)
    assert "| at least 4.00x |" in train.table(theirs, mine, 0.98)


def test_throughput_table_compares_the_two_loops(root: Path, capsys: pytest.CaptureFixture) -> None:
    train_loop.main(["--data-root", str(root), "--samples", "64", "--rounds", "1"])
    out = capsys.readouterr().out
    assert out.count("| per-sample DataLoader (reports' style) |") == 2, out  # training pass, data path alone
    assert out.count("| tensor-resident batches (ours) |") == 2, out
    assert "share of a training pass" in out


def test_step_table_compares_each_speed_option_with_fp32(root: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from training import speed
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "aot_eager")  # no C++ build in the suite
    train_step.main(["fashion_cnn", "--data-root", str(root), "--device", "cpu", "--samples", "64",
                     "--rounds", "2"])
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert rows["fp32"].endswith("| 1.00x |"), out  # the baseline's ratio against itself
    for variant in ("bf16 autocast", "fp32, channels-last", "bf16 autocast, channels-last", "fp32, torch.compile",
                    "fp32, batch 64 (half)", "fp32, batch 256 (double)"):
        assert variant in rows, out
        assert len(rows[variant].split(" | ")[3].split(", ")) == 2, out  # one rate per round
    assert "--samples 64 --rounds 2" in out


def test_skipped_variants_leave_the_baseline() -> None:
    from training.registry import get_config
    kept = train_step.variants(get_config("fashion_cnn"), conv_net=True, skip=["bf16", "fp32"])
    assert list(kept) == ["fp32"]  # "fp32" names the baseline too, which always stays
    assert "fp32, channels-last" not in train_step.variants(get_config("mnist_mlp"), conv_net=False)


def test_weight_average_table_scores_each_decay_every_epoch(root: Path, capsys: pytest.CaptureFixture) -> None:
    weight_average.main(["--data-root", str(root), "--device", "cpu", "--epochs", "2", "--decays", "0.5", "0.9"])
    out = capsys.readouterr().out
    assert "| samples | as trained | average 0.5 | average 0.9 | seconds |" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 2 and all(row.count("%") == 3 for row in rows), out
    assert "83 training images, 17 held out" in out, out  # 1/6 of the five classes' 100 images held out
