"""Studies: every one runs end to end on tiny data, resumes where it stopped, and runs trials in parallel."""

from __future__ import annotations

import csv
import json
import queue
from pathlib import Path

import pytest

from training import sweep
from training.registry import get_config

TINY = {"epochs": 1, "train_limit": 64, "test_limit": 32}
# The machinery, not the size, is under test: 1 of the grid's 96 networks, 2 of the 4 epoch counts.
MAX_TRIALS = {"fashion_grid": 1, "fashion_epochs": 2}


def _settings(root: Path, tmp: Path, **changes) -> sweep.Settings:
    return sweep.Settings(data_root=root, out=tmp / "sweeps", runs_dir=tmp / "runs", device="cpu",
                          overrides={**TINY, **changes}, retrain_limit=TINY["train_limit"])


@pytest.mark.parametrize("name", sorted(sweep.STUDIES))
def test_study_end_to_end(name: str, data_root: Path, tmp_path: Path) -> None:
    study = sweep.STUDIES[name]
    summary = sweep.run_study(study, _settings(data_root, tmp_path), jobs=1, max_trials=MAX_TRIALS.get(name))
    folder = tmp_path / "sweeps" / name
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == min(len(study.trials), MAX_TRIALS.get(name, 99))
    assert all(0 <= float(r[study.metric]) <= 1 for r in rows)
    assert (folder / "comparison.png").stat().st_size > 1000
    text = (folder / "results.md").read_text()
    assert f"# Study {name}" in text and f"Best: **{summary['best']}**" in text
    limits = json.loads((folder / "summary.json").read_text())["limits"]
    assert limits == {"train_limit": 64, "test_limit": 32, "retrain_limit": 64}  # a smoke run, for training.report
    if study.folds:
        assert "cross-validation on the training split" in text
        retrained = json.loads((tmp_path / "runs" / study.retrain / "report.json").read_text())
        assert retrained["epochs"] == get_config(study.retrain).epochs  # the report's 20, not --epochs
        assert retrained["train_size"] + round(TINY["train_limit"] / 6) == TINY["train_limit"]  # 1/6 validation
        assert (tmp_path / "runs" / study.retrain / "model.onnx").is_file()


def test_studied_factor_is_never_overridden() -> None:
    epochs = sweep.STUDIES["fashion_epochs"]
    assert [t.configs({"epochs": 1})[0].epochs for t in epochs.trials] == [3, 5, 8, 10]
    assert all(t.configs({"epochs": 1})[0].epochs == 1 for t in sweep.STUDIES["fashion_optimizer"].trials)
    chain = sweep.STUDIES["fashion_ae_lr"].trials[1].configs({})
    assert [c.name for c in chain] == ["fashion_autoencoder", "fashion_ae_classifier"]
    assert all(c.lr == 0.01 for c in chain) and chain[1].init_from == chain[0].name
    assert len(sweep.STUDIES["fashion_grid"].trials) == 96


def test_killed_sweep_continues_where_it_stopped(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    settings = _settings(data_root, tmp_path)
    real, calls = sweep.run_experiment, []

    def dies_on_sgd(cfg, opts):
        calls.append((cfg.optimizer, opts.resume))
        if cfg.optimizer == "sgd":
            raise KeyboardInterrupt  # the sweep is killed during its second trial
        return real(cfg, opts)

    monkeypatch.setattr(sweep, "run_experiment", dies_on_sgd)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_study(study, settings, jobs=1)
    assert (tmp_path / "sweeps" / study.name / "trials" / "adam" / "result.json").is_file()

    monkeypatch.setattr(sweep, "run_experiment", lambda cfg, opts: calls.append((cfg.optimizer, opts.resume))
                        or real(cfg, opts))
    sweep.run_study(study, settings, jobs=1)
    assert calls == [("adam", False), ("sgd", False), ("sgd", False)]  # adam was not trained again

    # A trial killed after a checkpoint resumes from it instead of starting over.
    (tmp_path / "sweeps" / study.name / "trials" / "sgd" / "result.json").unlink()
    (tmp_path / "sweeps" / study.name / "trials" / "sgd" / "runs" / "fashion_cnn_bn" / "report.json").unlink()
    calls.clear()
    sweep.run_study(study, settings, jobs=1)
    assert calls == [("sgd", True)]


def test_a_smaller_search_is_not_reused_by_a_bigger_one(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    trials, folds = [], []
    run_experiment, run_fold = sweep.run_experiment, sweep.run_fold
    monkeypatch.setattr(sweep, "run_experiment", lambda cfg, opts: trials.append(cfg.train_limit)
                        or run_experiment(cfg, opts))
    monkeypatch.setattr(sweep, "run_fold", lambda cfg, *args: folds.append(cfg.train_limit) or run_fold(cfg, *args))
    for limit in (32, 64, 64):  # a smaller search, the bigger one, the bigger one again (all done)
        settings = _settings(data_root, tmp_path, train_limit=limit)
        sweep.run_study(sweep.STUDIES["fashion_optimizer"], settings, jobs=1, max_trials=1)
        sweep.run_study(sweep.STUDIES["fashion_grid"], settings, jobs=1, max_trials=1)
    assert trials == [32, TINY["train_limit"], 64]  # the trial, the grid's winner retrained (once), the trial again
    assert folds == [32] * 3 + [64] * 3


def test_failed_trial_is_reported_and_the_others_kept(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    real = sweep.run_experiment

    def fails_on_sgd(cfg, opts):
        if cfg.optimizer == "sgd":
            raise RuntimeError("boom")
        return real(cfg, opts)

    monkeypatch.setattr(sweep, "run_experiment", fails_on_sgd)
    with pytest.raises(sweep.SweepError, match="(?s)1 of 2 tasks failed.*sgd: RuntimeError: boom"):
        sweep.run_study(study, _settings(data_root, tmp_path), jobs=1)
    assert (tmp_path / "sweeps" / study.name / "trials" / "adam" / "result.json").is_file()


def test_trials_run_in_parallel_processes(data_root: Path, tmp_path: Path) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    summary = sweep.run_study(study, _settings(data_root, tmp_path), jobs=2)
    results = [json.loads((tmp_path / "sweeps" / study.name / "trials" / t / "result.json").read_text())
               for t in ("adam", "sgd")]
    assert [r["trial"] for r in results] == ["adam", "sgd"] and summary["best"] in ("adam", "sgd")


def test_cli_lists_and_refuses_unknown(capsys) -> None:
    assert sweep.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in sweep.STUDIES)
    assert sweep.main(["nope"]) == 2 and "valid names" in capsys.readouterr().err


def test_pool_processes_are_dealt_out_over_the_gpus(monkeypatch) -> None:
    """Without GPUs here, the dealing itself: each pool process takes the next GPU index from the queue."""
    taken: list[int] = []
    monkeypatch.setattr(sweep.torch.cuda, "set_device", taken.append)
    threads = sweep.torch.get_num_threads()
    gpus = queue.SimpleQueue()
    for index in (0, 1, 0, 1):  # what _execute puts in for 4 processes over 2 GPUs
        gpus.put(index)
    try:
        for _ in range(4):
            sweep._init_worker(1, gpus)
    finally:
        sweep.torch.set_num_threads(threads)
    assert taken == [0, 1, 0, 1]
    assert sweep.gpus_to_spread("cpu") == 0 and sweep.default_jobs("cpu") >= 1
