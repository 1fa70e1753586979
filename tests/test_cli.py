"""The command line: listing, errors a person can act on, and a quick run end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training import fit
from training.registry import EXPERIMENTS, UnknownExperiment, config_from_dict, config_to_dict, get_config


def test_list_names_every_experiment_and_its_figure(capsys) -> None:
    assert fit.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, cfg in EXPERIMENTS.items():
        assert name in out and cfg.report_figure in out


def test_unknown_experiment_lists_the_valid_names(capsys) -> None:
    assert fit.main(["fashion_cnnn"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'fashion_cnnn'" in err
    assert all(name in err for name in EXPERIMENTS)
    with pytest.raises(UnknownExperiment):
        get_config("nope")


def test_help_explains_each_option(capsys) -> None:
    with pytest.raises(SystemExit):
        fit.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--seed", "--device", "--data-root", "--runs-dir",
                 "--resume", "--quick", "--store", "--no-publish"):
        assert flag in out


def test_missing_data_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert fit.main(["fashion_cnn", "--quick", "--data-root", str(tmp_path), "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: FashionMNIST not found") and "Traceback" not in err


def test_quick_run_with_overrides(fashion_root: Path, tmp_path: Path, capsys) -> None:
    args = ["fashion_cnn_bn", "--quick", "--epochs", "2", "--batch-size", "50", "--lr", "0.002", "--seed", "7",
            "--device", "cpu", "--data-root", str(fashion_root), "--runs-dir", str(tmp_path / "runs"),
            "--store", str(tmp_path / "store")]
    assert fit.main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    config = json.loads((tmp_path / "runs" / "fashion_cnn_bn" / "config.json").read_text())
    assert (config["epochs"], config["batch_size"], config["lr"], config["seed"]) == (2, 50, 0.002, 7)
    assert config["train_limit"] == fit.QUICK["train_limit"]
    assert not (tmp_path / "store").exists()  # smoke runs are never published


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_config_round_trips_through_json(name: str) -> None:
    cfg = get_config(name)
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_the_readmes_table_of_experiments_is_the_registry() -> None:
    """A new experiment is one registry entry; the README's table must name it (and where it is served)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("| experiment | what | report figure | served as |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|") for line in table.splitlines()[2:] if line.startswith("|")]
    listed = {name: row for row in rows for name in re.findall(r"`(\w+)`", row[1])}
    assert set(listed) == set(EXPERIMENTS)
    for name, cfg in EXPERIMENTS.items():
        if cfg.served_as:
            assert f"`{cfg.served_as}`" in listed[name][4], (name, cfg.served_as)
