"""python -m training.sweep NAME: a study of several runs, collected into a table (CSV, Markdown) and a plot.

    python -m training.sweep --list
    python -m training.sweep fashion_epochs                      # Report B: 3, 5, 8 and 10 epochs
    python -m training.sweep fashion_grid --train-limit 12000    # Report C: 96 networks x 3 folds, then retrain

A trial is a registered experiment with the studied setting changed (or a short chain of them: a classifier
that starts from its own autoencoder), trained by run_experiment, the one loop. A cross-validated study
scores each trial by k-fold cross-validation on the training split instead of the test split, one task
per fold, and then retrains the best trial as a registered experiment. Each finished trial or fold leaves
a result file, written atomically, under OUT/NAME/trials/; a rerun skips those and resumes half-trained
runs from their checkpoints, so a killed sweep continues where it stopped. Tasks run in parallel worker
processes (--jobs; default: one per usable CPU core, one per GPU).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .crossval import run_fold, summarize
from .data import DataNotFound, load_data
from .files import atomic_write_json, atomic_write_text
from .plots import plot_study
from .registry import ExperimentConfig, config_from_dict, config_to_dict, get_config
from .run import CHECKPOINT, CONFIG, RunOptions, resolve_device, run_experiment

log = logging.getLogger("training")


class SweepError(RuntimeError):
    """Some trials failed; the others' results are kept, and a rerun retries only the failed ones."""


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
    trials: tuple[Trial, ...]
    folds: int = 0                          # 0: score on the test split, as the report did; k: k-fold CV
    retrain: str | None = None              # CV studies: the experiment retrained with the best trial's network

    @property
    def metric(self) -> str:
        return "heldout_accuracy" if self.folds else "test_accuracy"


def _one_stage(name: str, factors: Mapping[str, Any], cfg: ExperimentConfig) -> Trial:
    return Trial(name, dict(factors), (cfg,))


# -- the studies of Reports B, C and D

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
          _grid(), folds=3, retrain="fashion_grid"),
)}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; valid names: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


# -- running

@dataclass(frozen=True)
class Settings:
    """What every task needs, picklable for worker processes."""

    data_root: Path = Path("data")
    out: Path = Path("runs/sweeps")
    runs_dir: Path = Path("runs")          # where a CV study's retrained best run goes (training.report reads it)
    device: str = "auto"
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # applied to every trial's configs
    retrain_limit: int | None = None       # training images of the retrained best (None: all; overrides don't apply)
    command: str = ""                      # recorded in the results and the runs (default: the plain command)


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


def _run_trial(study: Study, trial: Trial, settings: Settings) -> None:
    """Train a test-split trial's stages in its own runs folder; write its result file."""
    folder = _trial_dir(study, trial, settings)
    opts = RunOptions(data_root=settings.data_root, runs_dir=folder / "runs", device=settings.device,
                      publish=False, artifacts=False,
                      command=settings.command or f"python -m training.sweep {study.name}")
    reports = [run_stage(cfg, opts) for cfg in trial.configs(settings.overrides)]
    last = reports[-1]
    atomic_write_json(folder / "result.json", {
        "trial": trial.name, "factors": dict(trial.factors), "test_accuracy": last["metrics"]["test_accuracy"],
        "parameters": last["parameters"], "epochs": last["epochs"],
        "seconds": sum(r["wall_time_s"] for r in reports), "runs": [r["experiment"] for r in reports],
        "configs": _configs(trial, settings)})


def _run_trial_fold(study: Study, trial: Trial, fold: int, settings: Settings) -> None:
    """One fold of a cross-validated trial; its result file."""
    (cfg,) = trial.configs(settings.overrides)
    device = resolve_device(settings.device)
    data = load_data(cfg, settings.data_root).to(device)
    folder = _trial_dir(study, trial, settings)
    atomic_write_json(folder / f"fold{fold + 1}.json",
                      {**run_fold(cfg, data, study.folds, fold, folder / "runs", device), "configs": _configs(trial, settings)})


def _configs(trial: Trial, settings: Settings) -> list[dict[str, Any]]:
    """The trial's stages as `settings` configure them, as its result files record them."""
    return [config_to_dict(cfg) for cfg in trial.configs(settings.overrides)]


def _finished(path: Path, trial: Trial, settings: Settings) -> bool:
    """Whether `path` holds a result of `trial` as `settings` configure it: a smaller search's does not count."""
    if not path.is_file():
        return False
    saved = json.loads(path.read_text(encoding="utf-8")).get("configs", [])  # none in files written before
    try:
        return [config_from_dict(c) for c in saved] == list(trial.configs(settings.overrides))
    except (KeyError, TypeError, ValueError):  # a config of an older registry: run the trial again
        return False


def _init_worker(threads: int, gpus=None) -> None:
    """Set up one pool process; with `gpus` (a queue of GPU indices) it keeps to the one it takes."""
    torch.set_num_threads(threads)
    if gpus is not None:
        torch.cuda.set_device(gpus.get())  # "cuda" in the trials' settings now means this GPU
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("training").setLevel(logging.WARNING)  # the parent reports progress


def _execute(tasks: list[tuple[str, Callable[..., None], tuple]], jobs: int, gpus: int = 0) -> None:
    """Run every (label, function, args) task, `jobs` at a time; SweepError at the end lists failures.

    With `gpus` > 0 the pool's processes are dealt out over that many GPUs, round robin.
    """
    failures, started = [], time.perf_counter()

    def done(i: int, label: str, error: BaseException | None) -> None:
        state = f"FAILED: {type(error).__name__}: {error}" if error else "done"
        log.info("[%d/%d] %s %s (%.0f s)", i, len(tasks), label, state, time.perf_counter() - started)
        if error:
            failures.append(f"{label}: {type(error).__name__}: {error}")

    if jobs <= 1:
        for i, (label, fn, args) in enumerate(tasks, start=1):
            try:
                fn(*args)
                done(i, label, None)
            except (DataNotFound, KeyboardInterrupt):
                raise  # nothing else can work either / the user stopped it
            except Exception as err:  # one bad trial must not cost the others
                done(i, label, err)
    else:
        threads = max(1, _usable_cpus() // jobs)
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch thread pools
        devices = None
        if gpus:
            devices = context.Queue()
            for worker in range(jobs):
                devices.put(worker % gpus)
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(threads, devices)) as pool:
            futures = {pool.submit(fn, *args): label for label, fn, args in tasks}
            for i, future in enumerate(as_completed(futures), start=1):
                done(i, futures[future], future.exception())
    if failures:
        raise SweepError(f"{len(failures)} of {len(tasks)} tasks failed (rerun to retry them):\n  "
                         + "\n  ".join(failures))


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpus_to_spread(device: str) -> int:
    """How many GPUs a sweep deals its processes over: all of them for "cuda" (or "auto" on a GPU machine),
    none for the CPU or a named GPU such as "cuda:1"."""
    resolved = resolve_device(device)
    return torch.cuda.device_count() if resolved.type == "cuda" and resolved.index is None else 0


def default_jobs(device: str) -> int:
    """One process per usable core on the CPU; one per GPU on GPUs."""
    if resolve_device(device).type == "cuda":
        return max(1, gpus_to_spread(device))
    return _usable_cpus()


def _trial_result(study: Study, trial: Trial, settings: Settings) -> dict[str, Any]:
    folder = _trial_dir(study, trial, settings)
    if not study.folds:
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))
    folds = [json.loads((folder / f"fold{k + 1}.json").read_text(encoding="utf-8")) for k in range(study.folds)]
    summary = summarize(folds)
    return {"trial": trial.name, "factors": dict(trial.factors), "heldout_accuracy": summary["heldout_accuracy"],
            "heldout_accuracy_std": summary["heldout_accuracy_std"], "parameters": folds[0]["parameters"],
            "epochs": trial.configs(settings.overrides)[-1].epochs, "seconds": sum(f["seconds"] for f in folds)}


def run_study(study: Study, settings: Settings, jobs: int = 1, max_trials: int | None = None) -> dict[str, Any]:
    """Run what is not finished yet, then write the table, the plot and (CV studies) the retrained best."""
    trials = study.trials[:max_trials]
    tasks: list[tuple[str, Callable[..., None], tuple]] = []
    for trial in trials:
        folder = _trial_dir(study, trial, settings)
        if study.folds:
            tasks += [(f"{trial.name} fold {k + 1}/{study.folds}", _run_trial_fold, (study, trial, k, settings))
                      for k in range(study.folds) if not _finished(folder / f"fold{k + 1}.json", trial, settings)]
        elif not _finished(folder / "result.json", trial, settings):
            tasks.append((trial.name, _run_trial, (study, trial, settings)))
    log.info("%s: %d trials, %d tasks to run (%d already done), %d at a time", study.name, len(trials),
             len(tasks), len(trials) * max(study.folds, 1) - len(tasks), jobs)
    _execute(tasks, jobs, gpus_to_spread(settings.device))

    rows = [_trial_result(study, t, settings) for t in trials]
    best = max(rows, key=lambda r: r[study.metric])
    summary: dict[str, Any] = {"study": study.name, "metric": study.metric, "rows": rows, "best": best["trial"]}
    limits = {**{k: settings.overrides.get(k) for k in ("train_limit", "test_limit")},
              "retrain_limit": settings.retrain_limit}
    summary["limits"] = {k: v for k, v in limits.items() if v is not None}  # training.report skips smoke runs
    if study.retrain:
        summary["retrained"] = _retrain(study, next(t for t in trials if t.name == best["trial"]), settings)
    write_results(study, summary, Path(settings.out) / study.name, settings.command)
    return summary


def _retrain(study: Study, best: Trial, settings: Settings) -> dict[str, Any]:
    """The registered experiment with the winning network, on the whole training split, into the runs folder.

    A cheap search (--train-limit, --epochs) still retrains its winner in full, as the experiment says.
    """
    cfg = get_config(study.retrain).replace(model_kwargs=best.stages[-1].model_kwargs,
                                            train_limit=settings.retrain_limit)
    opts = RunOptions(data_root=settings.data_root, runs_dir=settings.runs_dir, device=settings.device,
                      publish=False, command=settings.command or f"python -m training.sweep {study.name}")
    log.info("%s: retraining the best network (%s) as %s for %d epochs", study.name, best.name, cfg.name, cfg.epochs)
    report = run_stage(cfg, opts)
    return {"experiment": cfg.name, "trial": best.name, "test_accuracy": report["metrics"]["test_accuracy"],
            "epochs": report["epochs"], "report": str(Path(settings.runs_dir) / cfg.name / "report.md")}


def write_results(study: Study, summary: dict[str, Any], folder: Path, command: str = "") -> None:
    """results.csv, results.md, comparison.png and summary.json in `folder`."""
    rows, metric = summary["rows"], study.metric
    factor_names = list(dict.fromkeys(k for r in rows for k in r["factors"]))
    spread = f"{metric}_std"
    header = ["trial", *factor_names, metric, *([spread] if study.folds else []), "parameters", "epochs", "seconds"]
    table = [[r["trial"], *[r["factors"].get(f, "") for f in factor_names], r[metric],
              *([r[spread]] if study.folds else []), r["parameters"], r["epochs"], round(r["seconds"], 1)]
             for r in sorted(rows, key=lambda r: -r[metric])]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *table])
    atomic_write_text(folder / "results.csv", buf.getvalue())

    scored = (f"mean accuracy over {study.folds}-fold cross-validation on the training split (± its spread "
              "across folds); the test split was not used to choose" if study.folds
              else "accuracy on the test split, as the report compared")
    lines = [f"# Study {study.name}", "", study.description + ".", "", f"Report: {study.report_figure}.", "",
             f"Scored by {scored}. Command: `{command or f'python -m training.sweep {study.name}'}`.", "",
             "| " + " | ".join(h.replace("_", " ") for h in header) + " |",
             "|" + "---|" * len(header)]
    for row in table:
        cells = [f"{100 * v:.2f}%" if h.startswith(metric) else str(v) for h, v in zip(header, row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Best: **{summary['best']}**."]
    if "retrained" in summary:
        r = summary["retrained"]
        lines.append(f"Retrained as `{r['experiment']}` for {r['epochs']} epochs on the training split: "
                     f"**{100 * r['test_accuracy']:.2f}%** test accuracy ({r['report']}, with its train and "
                     "validation curves).")
    lines += ["", "![comparison](comparison.png)", ""]
    atomic_write_text(folder / "results.md", "\n".join(lines))
    plot_study([r["trial"] for r in rows], [r[metric] for r in rows],
               [r.get(spread, 0.0) for r in rows], metric, folder / "comparison.png", f"{study.name}: {metric}")
    atomic_write_json(folder / "summary.json", summary)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.sweep", description=__doc__.split("\n")[0])
    p.add_argument("name", nargs="?", help="study name (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.add_argument("--jobs", type=int, help="tasks run at once (default: one per usable CPU core; one per GPU, each process on its own)")
    p.add_argument("--out", type=Path, default=Path("runs/sweeps"), help="results folder (default: runs/sweeps)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where a cross-validated study's retrained best run goes (default: ./runs)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="as for training.fit (default: ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, help="epochs of every trial, except where epochs are what is studied")
    p.add_argument("--train-limit", type=int, help="use only N training images of every trial, spread over the split")
    p.add_argument("--test-limit", type=int, help="use only N test images of every trial, spread over the split")
    p.add_argument("--max-trials", type=int, help="run only the first N trials (of a grid, say)")
    p.add_argument("--retrain-limit", type=int,
                   help="train the retrained best on only N training images (default: all; smoke runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for study in STUDIES.values():
            scoring = f"{study.folds}-fold CV" if study.folds else "test split"
            print(f"{study.name:<22} {len(study.trials):>3} trials, {scoring}: {study.description}")
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
                        overrides=overrides, retrain_limit=args.retrain_limit,
                        command=" ".join(["python -m training.sweep", *(sys.argv[1:] if argv is None else argv)]))
    try:
        summary = run_study(study, settings, args.jobs or default_jobs(args.device), args.max_trials)
    except (DataNotFound, SweepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{study.name}: best {summary['best']}; table in {args.out / study.name / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
