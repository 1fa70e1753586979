"""python -m training.sweep NAME: a study of several runs on Optuna, collected into a table (CSV, Markdown)
and a plot.

    python -m training.sweep --list
    python -m training.sweep fashion_epochs                      # Report B: 3, 5, 8 and 10 epochs
    python -m training.sweep fashion_grid --train-limit 12000    # Report C: 96 networks x 3 folds, then retrain
    python -m training.sweep fashion_search --storage postgresql://host/db   # the same on every machine

Each named study is an Optuna study of the same name. Report B's and D's one-factor studies and Report C's
grid are grids (Optuna's grid sampler: every point once); fashion_search is an open search (TPE). A trial is
a registered experiment with the studied setting changed (or a short chain of them: a classifier that starts
from its own autoencoder), trained by the one loop and scored on the test split, as the reports compared;
or, where a study says so, by k-fold cross-validation on the training split (Report C's grid) or on a
validation split held out of it (the open search), pruned at fold or epoch boundaries when it falls below
the median of the trials before it. A cross-validated or searched study then retrains its best trial on the
whole training split. The study lives in a storage (--storage, default an SQLite file in OUT/NAME/) that
any number of processes (--jobs) and machines running the same command share: none runs a trial another
holds, a killed worker's trial is run again, and a rerun continues where the last one stopped
(training/search.py).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
import torch

from .crossval import fit_and_score, run_fold, summarize
from .data import DataNotFound, load_data
from .files import atomic_write_json, atomic_write_text
from .machine import usable_cpus
from .plots import plot_study
from .registry import ExperimentConfig, config_from_dict, config_to_dict, get_config
from .run import CHECKPOINT, CONFIG, RunOptions, resolve_device, run_experiment
from .search import (GRACE_S, HEARTBEAT_S, POLL_S, SWEEP_FORMAT, SweepError, default_storage, open_storage,
                     open_study, outcome, work)
from .tracking import Board

log = logging.getLogger("training")


@dataclass(frozen=True)
class Trial:
    name: str                               # also its folder name under OUT/NAME/trials/
    factors: Mapping[str, Any]              # the studied setting, as the table shows it
    stages: tuple[ExperimentConfig, ...]    # run in order in one runs folder; the last one is scored

    def configs(self, overrides: Mapping[str, Any]) -> tuple[ExperimentConfig, ...]:
        """The stages with `overrides` (smoke-run limits, epochs) applied, except to what this trial studies."""
        kept = {k: v for k, v in overrides.items() if k not in self.factors}
        return tuple(cfg.replace(**kept) for cfg in self.stages)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    report_figure: str                      # what the report found
    trials: tuple[Trial, ...] = ()          # a grid: every point of the product of its trials' factors
    folds: int = 0                          # 0: score on the test split, as the report did; k: k-fold CV
    retrain: str | None = None              # the experiment retrained with the best trial's settings
    retrained: tuple[str, ...] = ("model_kwargs",)  # which of the best trial's config fields it takes
    # An open search instead of a grid: draws a trial's settings around the experiment `searched` (Optuna's
    # TPE sampler), scored on a validation split of this share of the training split, `budget` trials
    # unless --max-trials says.
    searched: str | None = None
    draw: Callable[[optuna.Trial, str], Trial] | None = None
    space: Mapping[str, str] = field(default_factory=dict)  # what `draw` draws from, as text
    budget: int = 0
    validation_split: float = 0.0
    # Pruning at fold or epoch boundaries by Optuna's median rule: (trials finished before any is pruned, the
    # first fold or epoch after which one may be); None: every trial runs in full (the one-factor comparisons).
    prune_after: tuple[int, int] | None = None

    @property
    def metric(self) -> str:
        return "heldout_accuracy" if self.folds else "val_accuracy" if self.draw else "test_accuracy"

    @property
    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's search space: each factor's values, in order of first appearance."""
        return {f: list(dict.fromkeys(t.factors[f] for t in self.trials)) for f in self.trials[0].factors}

    def size(self) -> int:
        return len(self.trials) if self.trials else self.budget

    def experiments(self) -> list[ExperimentConfig]:
        """The registered configs its trials start from."""
        return [c for t in self.trials for c in t.stages] or [get_config(self.searched)]


def _one_stage(name: str, factors: Mapping[str, Any], cfg: ExperimentConfig) -> Trial:
    return Trial(name, dict(factors), (cfg,))


# -- the studies of Reports B, C and D, and an open search

_BN = get_config("fashion_cnn_bn")
# Report B's denoising autoencoder and its classifier, 10 epochs each, at a constant rate as the report.
_REPORT_B_WIDTHS = {"784-512-256-64": (784, 512, 256, 64), "784-600-550-512": (784, 600, 550, 512)}


def _autoencoder_chain(widths: tuple[int, ...], lr: float) -> tuple[ExperimentConfig, ExperimentConfig]:
    ae = get_config("fashion_autoencoder").replace(model_kwargs={"widths": widths}, lr=lr, schedule="constant",
                                                   epochs=10)
    head = get_config("fashion_ae_classifier").replace(model_kwargs={"widths": widths, "hidden": 256}, lr=lr,
                                                       schedule="constant", epochs=10)
    return ae, head


def _grid() -> tuple[Trial, ...]:
    """Report C's grid: activation, filter size, dense nodes, dropout, filters, conv layers, pool size."""
    base = get_config("fashion_grid").replace(validation_split=0.0, epochs=3)  # 3 epochs per fold
    trials = []
    for act, kernel, dense, drop, filters, convs, pool in itertools.product(
            ("relu", "sigmoid", "tanh"), (3, 5), (128, 256), (0.1, 0.3), (16, 32), (2, 3), (2,)):
        kwargs = {"channels": (filters,) * convs, "kernel": kernel, "pool": pool, "pool_each": True,
                  "hidden": (dense,), "dropout": drop, "activation": act}
        factors = {"activation": act, "filter_size": kernel, "dense": dense, "dropout": drop, "filters": filters,
                   "conv_layers": convs, "pool": pool}
        trials.append(_one_stage(f"{act}-k{kernel}-dense{dense}-drop{drop}-f{filters}-conv{convs}-pool{pool}",
                                 factors, base.replace(model_kwargs=kwargs)))
    return tuple(trials)


# fashion_search: what it draws, log-uniform where the scale is unknown. Report A's noise strength is 0.2.
_SEARCH_SPACE = {"lr": "log-uniform 3e-4 to 1e-2 (peak of the one-cycle schedule)",
                 "weight_decay": "log-uniform 1e-6 to 1e-2", "batch_size": "64, 128 or 256",
                 "dropout": "uniform 0 to 0.5, before the output layer",
                 "augmentation": "uniform 0 to 0.5: strength of the uniform noise added to half the images"}
_SEARCH_VALIDATION = 1 / 6  # 5,000 of the 30,000 five-class training images; never the test split


def _fashion_search(trial: optuna.Trial, key: str) -> Trial:
    factors = {"lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
               "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
               "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
               "dropout": trial.suggest_float("dropout", 0.0, 0.5),
               "augmentation": trial.suggest_float("augmentation", 0.0, 0.5)}
    cfg = get_config("fashion_cnn").replace(
        lr=factors["lr"], weight_decay=factors["weight_decay"], batch_size=factors["batch_size"],
        model_kwargs={"dropout": factors["dropout"]}, uniform_noise=factors["augmentation"])
    return Trial(key, {k: round(v, 6) if isinstance(v, float) else v for k, v in factors.items()}, (cfg,))



STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("fashion_augmentation", "Report B CNN with and without its rotation and noise augmentation",
          "about 97% with augmentation vs 96% without (Report B)",
          (_one_stage("with", {"augmentation": "rotation 10 + noise"}, _BN),
           _one_stage("without", {"augmentation": "none"}, _BN.replace(rotation_degrees=0.0, gaussian_noise=0.0)))),
    Study("fashion_epochs", "Report B CNN trained for 3, 5, 8 and 10 epochs",
          "5 epochs chosen; 10 gave noisy curves (Report B)",
          tuple(_one_stage(f"{e}-epochs", {"epochs": e}, _BN.replace(epochs=e)) for e in (3, 5, 8, 10))),
    Study("fashion_optimizer", "Report B CNN with Adam and with plain SGD, both at learning rate 0.001",
          "Adam about 1 point better than SGD (Report B)",
          (_one_stage("adam", {"optimizer": "adam"}, _BN),
           _one_stage("sgd", {"optimizer": "sgd"}, _BN.replace(optimizer="sgd")))),
    Study("fashion_ae_lr", "Report B autoencoder 784-512-256-64 and its classifier at learning rates 0.001 and 0.01",
          "0.001: 96.20%; 0.01: 39.84%, diverged (Report B)",
          tuple(Trial(f"lr{lr}", {"lr": lr}, _autoencoder_chain(_REPORT_B_WIDTHS["784-512-256-64"], lr))
                for lr in (0.001, 0.01))),
    Study("fashion_ae_width", "Report B autoencoder widths: 784-512-256-64 against the thicker 784-600-550-512",
          "the thinner one (1,100,112 parameters) beat the thicker (2,167,596), which overfitted (Report B)",
          tuple(Trial(name, {"widths": name}, _autoencoder_chain(widths, 1e-3))
                for name, widths in _REPORT_B_WIDTHS.items())),
    Study("mnist_normalization", "Report D's MLP and small CNN with and without input normalisation",
          "Report D compares both; no figures given",
          tuple(_one_stage(f"{name}-{'normalized' if on else 'raw'}", {"model": name, "normalize": on},
                           get_config(name) if on else get_config(name).replace(normalize=None))
                for name in ("mnist_mlp", "mnist_cnn_small") for on in (True, False))),
    Study("fashion_grid", "Report C grid search over 7 network dimensions, all 10 FashionMNIST classes, "
          "3-fold cross-validation on the training split; the best network retrained 20 epochs",
          "best: relu, filter 3, dense 128, dropout 0.1, 16 filters, 2 conv layers, pool 2; 90.19% (Report C)",
          _grid(), folds=3, retrain="fashion_grid", prune_after=(8, 1)),
    Study("fashion_search", "An open search (TPE) over fashion_cnn's learning rate, weight decay, batch size, "
          "dropout and augmentation strength, scored on a validation split held out of the training split; "
          "the best retrained on the whole training split",
          "no report searched these; fashion_cnn's hand-picked recipe scored 98.42% on the test split",
          searched="fashion_cnn", retrain="fashion_cnn", retrained=("lr", "weight_decay", "batch_size", "model_kwargs",
                                                      "uniform_noise"),
          draw=_fashion_search, space=_SEARCH_SPACE, budget=30, validation_split=_SEARCH_VALIDATION,
          prune_after=(5, 3)),
)}



def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; valid names: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


# -- running

@dataclass(frozen=True)
class Settings:
    """What every worker needs, picklable for worker processes."""

    data_root: Path = Path("data")
    out: Path = Path("runs/sweeps")
    runs_dir: Path = Path("runs")          # where a study's retrained best run goes (training.report reads it)
    device: str = "auto"
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # applied to every trial's configs
    retrain_limit: int | None = None       # training images of the retrained best (None: all; overrides don't apply)
    command: str = ""                      # recorded in the results and the runs (default: the plain command)
    storage: str | None = None             # Optuna storage URL (default: an SQLite file in OUT/NAME/)
    trials_only: bool = False              # run trials and return: tables and retraining left to another worker
    heartbeat_s: int = HEARTBEAT_S         # training/search.py: how often a worker says it is alive,
    grace_s: int = GRACE_S                 # and how long a silent one is given before its trial runs again
    poll_s: float = POLL_S

    def storage_url(self, study: Study) -> str:
        return self.storage or default_storage(Path(self.out) / study.name)


def _same_config(run_dir: Path, cfg: ExperimentConfig) -> bool:
    path = run_dir / CONFIG
    return path.is_file() and config_from_dict(json.loads(path.read_text(encoding="utf-8"))) == cfg


def run_stage(cfg: ExperimentConfig, opts: RunOptions) -> dict[str, Any]:
    """A finished run with this config is read back, a half-finished one resumed, anything else run afresh."""
    run_dir = Path(opts.runs_dir) / cfg.name
    same = _same_config(run_dir, cfg)
    if same and (run_dir / "report.json").is_file():
        return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    return run_experiment(cfg, dataclasses.replace(opts, resume=same and (run_dir / CHECKPOINT).is_file()))


def _trial_dir(study: Study, trial: Trial, settings: Settings) -> Path:
    return Path(settings.out) / study.name / "trials" / trial.name


def _command(study: Study, settings: Settings) -> str:
    return settings.command or f"python -m training.sweep {study.name}"


Report = Callable[[int, dict[str, float]], None]  # (step, scores so far): may raise optuna.TrialPruned


def _score_on_test(study: Study, trial: Trial, settings: Settings, report: Report) -> dict[str, Any]:
    """Train the trial's stages in its own runs folder (a retried trial resumes them); the last one's test figures."""
    opts = RunOptions(data_root=settings.data_root, runs_dir=_trial_dir(study, trial, settings) / "runs",
                      device=settings.device, publish=False, artifacts=False, command=_command(study, settings))
    reports = [run_stage(cfg, opts) for cfg in trial.configs(settings.overrides)]
    last = reports[-1]
    return {"test_accuracy": last["metrics"]["test_accuracy"], "parameters": last["parameters"],
            "epochs": last["epochs"], "seconds": sum(r["wall_time_s"] for r in reports),
            "runs": [r["experiment"] for r in reports]}


def _score_by_folds(study: Study, trial: Trial, settings: Settings, report: Report) -> dict[str, Any]:
    """k-fold cross-validation on the training split, fold after fold, reporting the mean so far after each."""
    (cfg,) = trial.configs(settings.overrides)
    device = resolve_device(settings.device)
    data = load_data(cfg, settings.data_root).to(device)
    runs = _trial_dir(study, trial, settings) / "runs"
    folds = []
    for fold in range(study.folds):
        folds.append(run_fold(cfg, data, study.folds, fold, runs, device))
        report(fold + 1, summarize(folds))
    summary = summarize(folds)
    return {"heldout_accuracy": summary["heldout_accuracy"], "heldout_accuracy_std": summary["heldout_accuracy_std"],
            "parameters": folds[0]["parameters"], "epochs": cfg.epochs, "seconds": sum(f["seconds"] for f in folds)}


def _score_on_validation(study: Study, trial: Trial, settings: Settings, report: Report) -> dict[str, Any]:
    """Train on the training split less a held-out validation share; its accuracy after every epoch."""
    (cfg,) = trial.configs(settings.overrides)
    device = resolve_device(settings.device)
    data = load_data(cfg.replace(validation_split=study.validation_split), settings.data_root).to(device)
    result = fit_and_score(cfg, data, data.train, data.val, _trial_dir(study, trial, settings) / "runs", device,
                           desc=f"{study.name} {trial.name}", on_epoch=report)
    return {"val_accuracy": result["heldout_accuracy"], "parameters": result["parameters"], "epochs": cfg.epochs,
            "seconds": result["seconds"]}


def _scorer(study: Study) -> Callable[[Study, Trial, Settings, Report], dict[str, Any]]:
    return _score_by_folds if study.folds else _score_on_validation if study.draw else _score_on_test


def _draw(study: Study, trial: optuna.Trial, key: str) -> Trial:
    """The trial's settings: its grid point (the grid sampler's pick of each factor), or the search's draw."""
    if study.draw is not None:
        return study.draw(trial, key)
    factors = {f: trial.suggest_categorical(f, values) for f, values in study.grid.items()}
    return next(t for t in study.trials if dict(t.factors) == factors)


def _run_trial(study: Study, settings: Settings, trial: optuna.Trial, key: str) -> float:
    """One trial, start to end: draw, train and score (pruned where the study allows), recorded in the
    storage (user attributes) and on the study's TensorBoard."""
    chosen = _draw(study, trial, key)
    trial.set_user_attr("trial", chosen.name)
    trial.set_user_attr("factors", dict(chosen.factors))
    trial.set_user_attr("configs", [config_to_dict(c) for c in chosen.configs(settings.overrides)])
    board = Board(Path(settings.out) / study.name / "tensorboard" / chosen.name)
    metric = study.metric.replace("val_", "heldout_")  # what the scorers call the figure they report
    last_step = study.folds or chosen.configs(settings.overrides)[-1].epochs

    def report(step: int, scores: dict[str, float]) -> None:
        board.scalars({study.metric: scores[metric]}, step)
        if study.prune_after is None or step == last_step:  # a trial that is done is not pruned
            return
        trial.report(scores[metric], step)
        if trial.should_prune():
            log.info("%s: %s pruned after %s %d at %s %.4f", study.name, chosen.name,
                     "fold" if study.folds else "epoch", step, study.metric, scores[metric])
            trial.set_user_attr("pruned_at", step)
            board.hparams({**chosen.factors, "state": f"pruned at {step}"}, {f"final/{study.metric}": scores[metric]})
            board.close()
            raise optuna.TrialPruned(f"{study.metric} {scores[metric]:.4f} after step {step}")

    result = _scorer(study)(study, chosen, settings, report)
    log.info("%s: %s %s %.4f (%.0f s)", study.name, chosen.name, study.metric, result[study.metric],
             result["seconds"])
    trial.set_user_attr("result", result)
    board.hparams({**chosen.factors, "state": "complete"}, {f"final/{study.metric}": result[study.metric]})
    board.close()
    return result[study.metric]


def _definition(study: Study, settings: Settings) -> dict[str, Any]:
    """What makes two runs of the command one study: compared with what the storage holds (training/search.py)."""
    bases = [config_to_dict(c) for c in study.experiments()]
    return {"sweep_format": SWEEP_FORMAT, "study": study.name, "metric": study.metric, "folds": study.folds,
            "sampler": "tpe" if study.draw else "grid", "space": dict(study.space) or study.grid,
            "validation_split": study.validation_split, "pruning": study.prune_after,
            "overrides": dict(sorted(settings.overrides.items())),
            "experiments": hashlib.sha256(json.dumps(bases, sort_keys=True).encode()).hexdigest()[:16]}


def _sampler(study: Study, budget: int) -> optuna.samplers.BaseSampler:
    """Grids: the grid sampler. Searches: TPE after a third of the budget (at most 10) drawn at random; a
    constant liar keeps workers that ask at once from drawing alike."""
    if study.draw is not None:
        return optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=min(10, max(1, budget // 3)))
    return optuna.samplers.GridSampler(study.grid, seed=0)  # the same order in every worker


def _pruner(study: Study) -> optuna.pruners.BasePruner:
    if study.prune_after is None:
        return optuna.pruners.NopPruner()
    startup, first_step = study.prune_after
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=first_step)


def _open(study: Study, settings: Settings, budget: int | None = None) -> optuna.Study:
    storage = open_storage(settings.storage_url(study), settings.heartbeat_s, settings.grace_s)
    return open_study(storage, study.name, _definition(study, settings), _sampler(study, budget or study.size()),
                      _pruner(study))


def _worker(study: Study, settings: Settings, budget: int, threads: int | None = None, gpu: int | None = None,
            level: int | None = None) -> None:
    """One worker: take trials of the study in its storage until none is left to take or held by others.
    A worker process is given its torch threads, GPU and log level (progress lines are its own)."""
    _init_worker(threads, gpu)
    if level is not None:
        logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        log.setLevel(level)
    work(_open(study, settings, budget), lambda trial, key: _run_trial(study, settings, trial, key), budget,
         settings.poll_s)


def _init_worker(threads: int | None, gpu: int | None = None) -> None:
    """Set up a worker process; with `gpu` it keeps to that GPU ("cuda" in its settings now means it)."""
    if threads:
        torch.set_num_threads(threads)
    if gpu is not None:
        torch.cuda.set_device(gpu)


def _run_workers(study: Study, settings: Settings, budget: int, jobs: int) -> None:
    """`jobs` workers on the study: this process alone, or as many fresh processes (on GPUs, dealt out)."""
    if jobs <= 1:
        _worker(study, settings, budget)
        return
    gpus = gpus_to_spread(settings.device)
    threads = max(1, usable_cpus() // jobs)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch thread pools
    workers = [context.Process(target=_worker, args=(study, settings, budget, threads, i % gpus if gpus else None,
                                                     log.getEffectiveLevel())) for i in range(jobs)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    dead = [p.exitcode for p in workers if p.exitcode]
    if dead:
        raise SweepError(f"{len(dead)} of {jobs} worker processes died (exit codes {dead}); rerun to go on")


def gpus_to_spread(device: str) -> int:
    """How many GPUs a sweep deals its processes over: all of them for "cuda" (or "auto" on a GPU machine),
    none for the CPU or a named GPU such as "cuda:1"."""
    resolved = resolve_device(device)
    return torch.cuda.device_count() if resolved.type == "cuda" and resolved.index is None else 0


def default_jobs(device: str) -> int:
    """One process per usable core on the CPU; one per GPU on GPUs."""
    if resolve_device(device).type == "cuda":
        return max(1, gpus_to_spread(device))
    return usable_cpus()


def _refuse_old_layout(study: Study, settings: Settings) -> None:
    """The sweep before Optuna kept result files under trials/: such a folder is another version's study."""
    folder = Path(settings.out) / study.name
    old_results = [*folder.glob("trials/*/result.json"), *folder.glob("trials/*/fold*.json")]
    if settings.storage is None and not (folder / "study.db").exists() and old_results:
        raise SweepError(f"{folder} holds a study of the sweep before Optuna (result files in trials/); "
                         "move it away or give another --out")


def _row(trial: optuna.trial.FrozenTrial, study: Study) -> dict[str, Any]:
    """A finished trial as the table shows it; a pruned one with its figure when it was stopped."""
    attrs = trial.user_attrs
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return {"trial": attrs["trial"], "factors": attrs["factors"], **attrs["result"], "state": "complete"}
    step = attrs.get("pruned_at")
    unit = "fold" if study.folds else "epoch"
    row = {"trial": attrs["trial"], "factors": attrs["factors"], study.metric: trial.intermediate_values.get(step),
           "parameters": "", "epochs": "", "seconds": trial.duration.total_seconds() if trial.duration else 0.0,
           "state": f"pruned after {unit} {step}"}
    if study.folds:
        row[f"{study.metric}_std"] = None  # not measured: its folds were not all run
    return row


def run_study(study: Study, settings: Settings, jobs: int = 1, max_trials: int | None = None) -> dict[str, Any]:
    """Run what is not finished yet, then write the table, the plot and (CV and searched studies) the
    retrained best. Several commands on one storage share the work; each writes the tables at the end."""
    budget = min(max_trials or study.size(), study.size())
    _refuse_old_layout(study, settings)
    optuna_study = _open(study, settings, budget)  # a bad storage or another version's study stops here
    load_data(study.experiments()[0].replace(**settings.overrides), settings.data_root)  # said once, not per worker
    log.info("%s: %d trials in %s, %d worker(s)", study.name, budget, settings.storage_url(study), jobs)
    _run_workers(study, settings, budget, jobs)

    finished, failed = outcome(optuna_study)
    if failed:
        raise SweepError(f"{len(failed)} of {budget} trials failed (rerun to retry them):\n  " + "\n  ".join(
            f"{t.user_attrs.get('trial', t.number)}: {t.user_attrs.get('error', 'stopped')}" for t in failed))
    summary: dict[str, Any] = {"study": study.name, "metric": study.metric}
    if settings.trials_only:
        return {**summary, "rows": []}
    rows = [_row(t, study) for t in finished]
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: r[study.metric])
    summary.update(rows=rows, best=best["trial"], pruned=len(rows) - len(complete), storage=settings.storage_url(study))
    limits = {**{k: settings.overrides.get(k) for k in ("train_limit", "test_limit")},
              "retrain_limit": settings.retrain_limit}
    summary["limits"] = {k: v for k, v in limits.items() if v is not None}  # training.report skips smoke runs
    if study.retrain:
        winner = next(t for t in finished if t.user_attrs["trial"] == best["trial"])
        summary["retrained"] = _retrain(study, config_from_dict(winner.user_attrs["configs"][-1]), best["trial"],
                                        settings)
    write_results(study, summary, Path(settings.out) / study.name, settings.command)
    return summary


def _retrain(study: Study, best: ExperimentConfig, trial: str, settings: Settings) -> dict[str, Any]:
    """The registered experiment with the winning settings, on the whole training split, into the runs folder.

    A cheap search (--train-limit, --epochs) still retrains its winner in full, as the experiment says. An
    open search's winner is retrained under the study's name, beside the registered run it improves on.
    """
    base = get_config(study.retrain)
    cfg = base.replace(**{f: getattr(best, f) for f in study.retrained}, train_limit=settings.retrain_limit,
                       name=base.name if study.trials else study.name)
    opts = RunOptions(data_root=settings.data_root, runs_dir=settings.runs_dir, device=settings.device,
                      publish=False, command=_command(study, settings))
    log.info("%s: retraining the best (%s) as %s for %d epochs", study.name, trial, cfg.name, cfg.epochs)
    Path(settings.runs_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(settings.runs_dir) / f".{cfg.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers that end together: one trains, the others read its report
        report = run_stage(cfg, opts)
    return {"experiment": cfg.name, "trial": trial, "test_accuracy": report["metrics"]["test_accuracy"],
            "epochs": report["epochs"], "report": str(Path(settings.runs_dir) / cfg.name / "report.md")}


def _storage_shown(url: str, folder: Path) -> str:
    """The storage as the table names it: the default SQLite file by its place beside the table."""
    return f"`{folder / 'study.db'}` (SQLite)" if url == default_storage(folder) else f"`{url}`"


def write_results(study: Study, summary: dict[str, Any], folder: Path, command: str = "") -> None:
    """results.csv, results.md, comparison.png and summary.json in `folder`."""
    rows, metric = summary["rows"], study.metric
    factor_names = list(dict.fromkeys(k for r in rows for k in r["factors"]))
    spread = f"{metric}_std"
    header = ["trial", *factor_names, metric, *([spread] if study.folds else []), "parameters", "epochs", "seconds",
              "state"]
    table = [[r["trial"], *[r["factors"].get(f, "") for f in factor_names], r[metric],
              *([r[spread]] if study.folds else []), r["parameters"], r["epochs"], round(r["seconds"], 1), r["state"]]
             for r in sorted(rows, key=lambda r: (r["state"] != "complete", -r[metric]))]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *table])
    atomic_write_text(folder / "results.csv", buf.getvalue())

    scored = (f"mean accuracy over {study.folds}-fold cross-validation on the training split (± its spread "
              "across folds); the test split was not used to choose" if study.folds
              else f"accuracy on a validation split of {study.validation_split:.0%} held out of the training split; "
              "the test split was not used to choose" if study.draw
              else "accuracy on the test split, as the report compared")
    pruned = summary.get("pruned", 0)
    if study.prune_after is not None:
        unit = "fold" if study.folds else "epoch"
        scored += (f". Pruned: {pruned} of {len(rows)} trials, stopped at a {unit} boundary when below the "
                   f"median of the trials before them at that {unit} (their figure is the one they had then)")
    lines = [f"# Study {study.name}", "", study.description + ".", "", f"Report: {study.report_figure}.", "",
             f"Scored by {scored}. Command: `{command or f'python -m training.sweep {study.name}'}`.", "",
             f"Storage: {_storage_shown(summary.get('storage', ''), folder)}, as the Optuna study {study.name}.", "",
             "| " + " | ".join(h.replace("_", " ") for h in header) + " |",
             "|" + "---|" * len(header)]
    for row in table:
        cells = ["" if v is None else f"{100 * v:.2f}%" if h.startswith(metric) else str(v)
                 for h, v in zip(header, row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Best: **{summary['best']}**."]
    if "retrained" in summary:
        r = summary["retrained"]
        lines.append(f"Retrained as `{r['experiment']}` for {r['epochs']} epochs on the training split: "
                     f"**{100 * r['test_accuracy']:.2f}%** test accuracy ({r['report']}, with its train and "
                     "validation curves).")
    lines += ["", "![comparison](comparison.png)", ""]
    atomic_write_text(folder / "results.md", "\n".join(lines))
    shown = [r for r in rows if r["state"] == "complete"]  # a pruned trial's figure is not a finished one's
    plot_study([r["trial"] for r in shown], [r[metric] for r in shown],
               [r.get(spread, 0.0) for r in shown], metric, folder / "comparison.png", f"{study.name}: {metric}")
    atomic_write_json(folder / "summary.json", summary)



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.sweep", description=__doc__.split("\n")[0])
    p.add_argument("name", nargs="?", help="study name (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.add_argument("--jobs", type=int, help="worker processes on this machine (default: one per usable CPU core; "
                                             "one per GPU, each process on its own)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage the study lives in: any database URL Optuna takes, such as "
                        "postgresql://user:password@host/db, shared by the same command on other machines "
                        "(default: sqlite:///OUT/NAME/study.db, shared by the processes of this machine)")
    p.add_argument("--trials-only", action="store_true",
                   help="run trials and stop: leave the tables and the retrained best to the worker without it")
    p.add_argument("--out", type=Path, default=Path("runs/sweeps"), help="results folder (default: runs/sweeps)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where a study's retrained best run goes (default: ./runs)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="as for training.fit (default: ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, help="epochs of every trial, except where epochs are what is studied")
    p.add_argument("--train-limit", type=int, help="use only N training images of every trial, spread over the split")
    p.add_argument("--test-limit", type=int, help="use only N test images of every trial, spread over the split")
    p.add_argument("--max-trials", type=int, help="run only N trials (of a grid, in its sampler's seeded order; of a "
                                                   "search, instead of its budget)")
    p.add_argument("--retrain-limit", type=int,
                   help="train the retrained best on only N training images (default: all; smoke runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for study in STUDIES.values():
            scoring = (f"{study.folds}-fold CV" if study.folds else "validation split, TPE" if study.draw
                       else "test split")
            print(f"{study.name:<22} {study.size():>3} trials, {scoring}: {study.description}")
        return 0
    if not args.name:
        _parser().error("a study name is required (see --list)")
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("training").setLevel(logging.INFO)
    try:
        study = get_study(args.name)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in {"epochs": args.epochs, "train_limit": args.train_limit,
                                   "test_limit": args.test_limit}.items() if v is not None}
    settings = Settings(data_root=args.data_root, out=args.out, runs_dir=args.runs_dir, device=args.device,
                        overrides=overrides, retrain_limit=args.retrain_limit, storage=args.storage,
                        trials_only=args.trials_only,
                        command=" ".join(["python -m training.sweep", *(sys.argv[1:] if argv is None else argv)]))
    try:
        summary = run_study(study, settings, args.jobs or default_jobs(args.device), args.max_trials)
    except (DataNotFound, SweepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.trials_only:
        print(f"{study.name}: no trial left to take")
        return 0
    print(f"{study.name}: best {summary['best']}; table in {args.out / study.name / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
