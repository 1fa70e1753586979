"""Studies on Optuna: every one runs end to end on tiny data, resumes where it stopped, shares one storage
between workers, retries a killed worker's trial, prunes, and refuses a storage or study it cannot use."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from test_tensorboard import hparams_of, read_events
from training import run as run_module
from training import search, sweep
from training.registry import get_config

REPO = Path(__file__).resolve().parents[1]
TINY = {"epochs": 1, "train_limit": 64, "test_limit": 32}
# The machinery, not the size, is under test: 1 of the grid's 96 networks, 2 of the 4 epoch counts, 2 draws.
MAX_TRIALS = {"fashion_grid": 1, "fashion_epochs": 2, "fashion_search": 2}


def _settings(root: Path, tmp: Path, **changes) -> sweep.Settings:
    overrides = {**TINY, **{k: v for k, v in changes.items() if k in TINY}}
    rest = {k: v for k, v in changes.items() if k not in TINY}
    return sweep.Settings(**{"data_root": root, "out": tmp / "sweeps", "runs_dir": tmp / "runs", "device": "cpu",
                             "overrides": overrides, "retrain_limit": TINY["train_limit"], **rest})


def _trials(settings: sweep.Settings, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = settings.storage or search.default_storage(settings.out / name)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _complete(settings: sweep.Settings, name: str) -> list[str]:
    return sorted(t.user_attrs["trial"] for t in _trials(settings, name) if t.state.name == "COMPLETE")


@pytest.mark.parametrize("name", sorted(sweep.STUDIES))
def test_study_end_to_end(name: str, data_root: Path, tmp_path: Path) -> None:
    study = sweep.STUDIES[name]
    summary = sweep.run_study(study, _settings(data_root, tmp_path), jobs=1, max_trials=MAX_TRIALS.get(name))
    folder = tmp_path / "sweeps" / name
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == min(study.size(), MAX_TRIALS.get(name, 99))
    assert all(0 <= float(r[study.metric]) <= 1 and r["state"] == "complete" for r in rows)
    assert (folder / "comparison.png").stat().st_size > 1000
    text = (folder / "results.md").read_text()
    assert f"# Study {name}" in text and f"Best: **{summary['best']}**" in text and "study.db" in text
    limits = json.loads((folder / "summary.json").read_text())["limits"]
    assert limits == {"train_limit": 64, "test_limit": 32, "retrain_limit": 64}  # a smoke run, for training.report
    best = read_events(folder / "tensorboard" / summary["best"])  # each trial: an HParams entry of the study
    assert f"final/{study.metric}" in best.Tags()["scalars"] and hparams_of(best)["state"] == "complete"
    if study.folds:
        assert "cross-validation on the training split" in text
    if study.draw:
        assert "validation split of 17% held out of the training split" in text
    if study.retrain:
        retrained = summary["retrained"]["experiment"]
        report = json.loads((tmp_path / "runs" / retrained / "report.json").read_text())
        assert report["epochs"] == get_config(study.retrain).epochs  # the registered epochs, not --epochs
        held_out = round(TINY["train_limit"] * get_config(study.retrain).validation_split)
        assert report["train_size"] + held_out == TINY["train_limit"]
        assert (tmp_path / "runs" / retrained / "model.onnx").is_file()


def test_studied_factor_is_never_overridden() -> None:
    epochs = sweep.STUDIES["fashion_epochs"]
    assert [t.configs({"epochs": 1})[0].epochs for t in epochs.trials] == [3, 5, 8, 10]
    assert all(t.configs({"epochs": 1})[0].epochs == 1 for t in sweep.STUDIES["fashion_optimizer"].trials)
    chain = sweep.STUDIES["fashion_ae_lr"].trials[1].configs({})
    assert [c.name for c in chain] == ["fashion_autoencoder", "fashion_ae_classifier"]
    assert all(c.lr == 0.01 for c in chain) and chain[1].init_from == chain[0].name
    grid = sweep.STUDIES["fashion_grid"]
    assert len(grid.trials) == 96 and len(grid.grid) == 7 and grid.grid["activation"] == ["relu", "sigmoid", "tanh"]


def test_a_killed_sweep_continues_where_it_stopped(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    settings = _settings(data_root, tmp_path, epochs=2)
    real_run, real_epoch, calls, epochs = sweep.run_experiment, run_module.train_one_epoch, [], []

    def recorded(cfg, opts):
        calls.append((cfg.optimizer, opts.resume))
        return real_run(cfg, opts)

    def killed_in_sgds_second_epoch(*args, **kwargs):
        epochs.append(args[3].__class__.__name__)  # the optimizer
        if epochs.count("SGD") == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_experiment", recorded)
    monkeypatch.setattr(run_module, "train_one_epoch", killed_in_sgds_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_study(study, settings, jobs=1)
    assert "sgd" not in _complete(settings, study.name)
    adam_done = _complete(settings, study.name) == ["adam"]  # the grid sampler's seeded order decides

    sweep.run_study(study, settings, jobs=1)
    # adam was trained once; sgd went on from its epoch-1 checkpoint.
    assert [c for c in calls if c[0] == "adam"] == [("adam", False)]
    assert [c for c in calls if c[0] == "sgd"] == [("sgd", False), ("sgd", True)]
    assert calls.index(("adam", False)) < calls.index(("sgd", False)) if adam_done else True
    assert _complete(settings, study.name) == ["adam", "sgd"]


def test_failed_trial_is_reported_and_the_others_kept(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    settings = _settings(data_root, tmp_path)
    real = sweep.run_experiment

    def fails_on_sgd(cfg, opts):
        if cfg.optimizer == "sgd":
            raise RuntimeError("boom")
        return real(cfg, opts)

    monkeypatch.setattr(sweep, "run_experiment", fails_on_sgd)
    with pytest.raises(sweep.SweepError, match="(?s)1 of 2 trials failed.*sgd: RuntimeError: boom"):
        sweep.run_study(study, settings, jobs=1)
    assert _complete(settings, study.name) == ["adam"]
    monkeypatch.undo()
    sweep.run_study(study, settings, jobs=1)  # a rerun retries the failed trial alone
    assert _complete(settings, study.name) == ["adam", "sgd"]


def test_two_commands_share_one_study_without_running_a_trial_twice(data_root: Path, tmp_path: Path) -> None:
    """One command with two worker processes (--jobs 2) and one with one, started together on one storage."""
    command = [sys.executable, "-m", "training.sweep", "fashion_epochs", "--device", "cpu",
               "--data-root", str(data_root), "--out", str(tmp_path / "sweeps"), "--runs-dir", str(tmp_path / "runs"),
               *[a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([*command, "--jobs", jobs], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for jobs in ("2", "1")]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    settings = _settings(data_root, tmp_path)
    counted = search.counted(_trials(settings, "fashion_epochs"))
    assert sorted(t.user_attrs["trial"] for t in counted) == ["10-epochs", "3-epochs", "5-epochs", "8-epochs"]
    assert all(t.state.name == "COMPLETE" for t in counted)
    with open(tmp_path / "sweeps" / "fashion_epochs" / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_a_killed_workers_trial_is_run_again(data_root: Path, tmp_path: Path) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    settings = _settings(data_root, tmp_path, heartbeat_s=1, grace_s=2, poll_s=0.2)
    # A worker takes the first trial, beats once, and dies.
    dead = sweep._open(study, settings)
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's note that workers normally optimize()
        trial = dead.ask()
    dead._storage.record_heartbeat(trial._trial_id)
    sweep.run_study(study, settings, jobs=1)
    trials = _trials(settings, study.name)
    assert [t.state.name for t in trials if t.number == trial.number] == ["FAIL"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert [t.state.name for t in retried] == ["COMPLETE"]
    assert _complete(settings, study.name) == ["adam", "sgd"]


def test_hopeless_trials_are_pruned_and_recorded(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Fold scores falling trial after trial: once 8 trials have finished, the next are stopped after fold 1."""
    scores = iter(0.9 - 0.01 * i for i in range(100))

    def scored_fold(cfg, data, folds, fold, runs, device):
        return {"fold": fold + 1, "size": 10, "train_size": 20, "heldout_accuracy": next(scores),
                "heldout_loss": 1.0, "parameters": 1, "seconds": 0.0}

    monkeypatch.setattr(sweep, "run_fold", scored_fold)
    settings = _settings(data_root, tmp_path, retrain_limit=None)
    monkeypatch.setattr(sweep, "_retrain", lambda *args: {"experiment": "fashion_grid", "trial": "x",
                                                         "test_accuracy": 0.5, "epochs": 1, "report": "r"})
    summary = sweep.run_study(sweep.STUDIES["fashion_grid"], settings, jobs=1, max_trials=10)
    assert summary["pruned"] == 2
    with open(tmp_path / "sweeps" / "fashion_grid" / "results.csv", newline="") as f:
        states = [r["state"] for r in csv.DictReader(f)]
    assert states == ["complete"] * 8 + ["pruned after fold 1"] * 2
    assert "Pruned: 2 of 10 trials" in (tmp_path / "sweeps" / "fashion_grid" / "results.md").read_text()


def test_a_storage_that_does_not_parse_or_answer_is_named_before_training(data_root: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    monkeypatch.setattr(sweep, "run_experiment", lambda *args: pytest.fail("trained despite a bad storage"))
    study = sweep.STUDIES["fashion_optimizer"]
    for url, why in (("no-such-scheme:/x", "cannot open the study storage no-such-scheme:/x"),
                     ("postgresql://someone:secret@127.0.0.1:9/db", "cannot open the study storage "
                                                                     "postgresql://someone:\\*\\*\\*@127.0.0.1:9/db")):
        with pytest.raises(sweep.SweepError, match=why):
            sweep.run_study(study, _settings(data_root, tmp_path, storage=url), jobs=1)


def test_another_study_or_version_under_the_same_name_is_refused(data_root: Path, tmp_path: Path) -> None:
    study = sweep.STUDIES["fashion_optimizer"]
    sweep.run_study(study, _settings(data_root, tmp_path, train_limit=32), jobs=1, max_trials=1)
    with pytest.raises(sweep.SweepError, match=r"other settings \(overrides: .*'train_limit': 32.* there, "
                                               r".*'train_limit': 64.* now\)"):
        sweep.run_study(study, _settings(data_root, tmp_path), jobs=1)
    stored = optuna.load_study(study_name=study.name, storage=search.default_storage(tmp_path / "sweeps" / study.name))
    stored.set_user_attr("definition", {**stored.user_attrs["definition"], "sweep_format": 1})
    with pytest.raises(sweep.SweepError, match="sweep_format: 1 there, 2 now"):
        sweep.run_study(study, _settings(data_root, tmp_path, train_limit=32), jobs=1)
    old = tmp_path / "old" / "sweeps" / study.name / "trials" / "adam"  # the sweep before Optuna
    old.mkdir(parents=True)
    (old / "result.json").write_text("{}")
    with pytest.raises(sweep.SweepError, match="before Optuna"):
        sweep.run_study(study, _settings(data_root, tmp_path / "old"), jobs=1)


def test_cli_lists_and_refuses_unknown(capsys) -> None:
    assert sweep.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in sweep.STUDIES)
    assert sweep.main(["nope"]) == 2 and "valid names" in capsys.readouterr().err


def test_worker_processes_are_dealt_out_over_the_gpus(monkeypatch) -> None:
    """Without GPUs here, the dealing itself: worker i of N keeps to GPU i mod the GPUs' count."""
    assert sweep.gpus_to_spread("cpu") == 0 and sweep.default_jobs("cpu") >= 1
    taken: list[int] = []
    started: list[tuple] = []
    monkeypatch.setattr(sweep.torch.cuda, "set_device", taken.append)
    threads = sweep.torch.get_num_threads()
    try:
        for gpu in (0, 1):
            sweep._init_worker(1, gpu)
    finally:
        sweep.torch.set_num_threads(threads)
    assert taken == [0, 1]

    class Process:
        def __init__(self, target, args):
            started.append(args[3:5])
            self.exitcode = 0

        def start(self) -> None: ...

        def join(self) -> None: ...

    monkeypatch.setattr(sweep, "gpus_to_spread", lambda device: 2)
    monkeypatch.setattr(sweep.multiprocessing, "get_context", lambda how: type("C", (), {"Process": Process}))
    sweep._run_workers(sweep.STUDIES["fashion_optimizer"], sweep.Settings(), 2, jobs=4)
    assert [gpu for _, gpu in started] == [0, 1, 0, 1]
