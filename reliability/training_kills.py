"""A training run SIGKILLed at random moments: the checkpoint and the store stay valid, --resume finishes
the run, and its final weights equal an uninterrupted run's (CPU, deterministic).

    python -m reliability.training_kills --trials 20        # or via python -m reliability training

Each trial starts `python -m reliability.training_kills --child ...`, which runs the tiny experiment
with one kill planted at a random moment of one phase: during an epoch, while a checkpoint is written
(before, within or after its temp file, before or after the rename), during the ONNX export, or while
a version is published (staging, manifest, before or after the rename). The parent then checks the
files the kill left, resumes, and compares with the reference run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from training import checkpoint as checkpoint_module, files, store as store_module, run as run_module
from training.checkpoint import CheckpointError, load_checkpoint
from training.registry import get_config
from training.run import CHECKPOINT, RunOptions, run_experiment
from training.store import MODEL_FILE, latest, read_manifest, versions

REPO = Path(__file__).resolve().parents[1]
# Tiny and CPU-only, so a run takes seconds and is bitwise deterministic; fashion_cnn is published as "fashion".
EXPERIMENT, SERVED = "fashion_cnn", "fashion"
TINY = {"epochs": 3, "train_limit": 256, "test_limit": 64}
PHASES = ("epoch", "checkpoint", "export", "publish")


def config():
    return get_config(EXPERIMENT).replace(**TINY)


def write_data(root: Path) -> Path:
    """The synthetic FashionMNIST the tests use (tests/synthetic.py), in torchvision's layout."""
    sys.path.insert(0, str(REPO / "tests"))  # the tests' generator, not a copy of it
    from synthetic import write_fashion_mnist

    return write_fashion_mnist(root)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _then_die(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        fn(*args, **kwargs)
        _die()
    return wrapped


def _nth(count: int, fn: Callable[..., Any], planted: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, except that its `count`-th call is `planted`."""
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return (planted if calls[0] == count else fn)(*args, **kwargs)
    return wrapped


def _die_within(delay: float, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, with a SIGKILL `delay` seconds after it starts (in it, or in whatever follows it)."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        threading.Timer(delay, _die).start()
        return fn(*args, **kwargs)
    return wrapped


def _half_written(path: Path, data: bytes) -> None:
    """What a kill in the middle of atomic_write_bytes leaves: half a temp file, never renamed."""
    tmp = Path(path).parent / f".{Path(path).name}.killed.tmp"
    tmp.write_bytes(data[: len(data) // 2])
    _die()


def plant_kill(phase: str, rng: random.Random) -> str:
    """Patch the training code so this process SIGKILLs itself at a random moment of `phase`; says where."""
    epoch = rng.randint(1, TINY["epochs"])
    if phase == "epoch":
        delay = rng.uniform(0.0, 0.4)
        original = run_module.train_one_epoch
        run_module.train_one_epoch = _nth(epoch, original, _die_within(delay, original))
        return f"{delay:.2f} s into epoch {epoch}"
    if phase == "checkpoint":
        step = rng.choice(["before the temp file", "half-way through the temp file", "before the rename",
                           "after the rename"])
        write, replace = files.atomic_write_bytes, os.replace
        planted = {"before the temp file": lambda path, data: _die(),
                   "half-way through the temp file": _half_written,
                   "before the rename": lambda path, data: (setattr(files.os, "replace", lambda *a: _die()),
                                                            write(path, data)),
                   "after the rename": lambda path, data: (setattr(files.os, "replace", _then_die(replace)),
                                                           write(path, data))}[step]
        checkpoint_module.atomic_write_bytes = _nth(epoch, write, planted)
        return f"checkpoint {epoch}, {step}"
    if phase == "export":
        delay = rng.uniform(0.0, 3.0)
        run_module.export_onnx = _die_within(delay, run_module.export_onnx)
        return f"{delay:.2f} s into the export (or what follows it)"
    step = rng.choice(["after staging the file", "after the manifest", "before the rename", "after the rename",
                       "after publishing, before report.json"])
    if step == "after staging the file":
        store_module.shutil.copyfile = _then_die(shutil.copyfile)
    elif step == "after the manifest":
        store_module.atomic_write_json = _then_die(store_module.atomic_write_json)
    elif step == "before the rename":
        store_module.os.rename = lambda *a: _die()
    elif step == "after the rename":
        store_module.fsync_dir = lambda path: _die()
    else:
        run_module.publish_model = _then_die(run_module.publish_model)
    return f"publishing, {step}"


def child(args: argparse.Namespace) -> None:
    if args.phase:
        print(plant_kill(args.phase, random.Random(args.seed)), flush=True)
    run_experiment(config(), RunOptions(data_root=args.data, runs_dir=args.runs, store=args.store, device="cpu",
                                        resume=args.resume, command="reliability trial"))


def _start(data: Path, work: Path, resume: bool = False, phase: str | None = None,
           seed: int = 0) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "reliability.training_kills", "--child", "--data", str(data),
            "--runs", str(work / "runs"), "--store", str(work / "store")]
    argv += ["--resume"] * resume + (["--phase", phase, "--seed", str(seed)] if phase else [])
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def check_files(work: Path) -> list[str]:
    """What is wrong with the checkpoint and the store a kill left (nothing, if all is well)."""
    problems = []
    checkpoint = work / "runs" / EXPERIMENT / CHECKPOINT
    if checkpoint.exists():
        try:
            load_checkpoint(checkpoint)
        except CheckpointError as err:
            problems.append(f"checkpoint: {err}")
    for version in versions(work / "store", SERVED):
        try:
            manifest = read_manifest(version)
            if files.sha256_file(version / MODEL_FILE) != manifest["sha256"]:
                problems.append(f"{version.name}: model.onnx does not match its manifest")
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"{version.name}: {type(err).__name__}: {err}")
    return problems


def trial(number: int, data: Path, work: Path, reference: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    phase, seed = rng.choice(PHASES), rng.randrange(2 ** 31)
    shutil.rmtree(work, ignore_errors=True)
    killed = _start(data, work, phase=phase, seed=seed)
    where = killed.stdout.strip().splitlines()[0] if killed.stdout.strip() else "?"
    record: dict[str, Any] = {"trial": number, "phase": phase, "where": where, "killed": killed.returncode == -9,
                              "problems": []}
    if killed.returncode != -9:
        record["problems"].append(f"the run was not killed (exit {killed.returncode}): {killed.stderr[-500:]}")
    record["problems"] += check_files(work)
    checkpoint = work / "runs" / EXPERIMENT / CHECKPOINT
    record["resumed"] = checkpoint.exists()  # killed before the first checkpoint: nothing to resume, start again
    record["epoch_at_kill"] = load_checkpoint(checkpoint)["epoch"] if checkpoint.exists() and not record[
        "problems"] else 0
    finished = _start(data, work, resume=record["resumed"])
    if finished.returncode != 0:
        record["problems"].append(f"the resumed run failed: {finished.stderr[-800:]}")
        return record
    record["problems"] += check_files(work)
    final = load_checkpoint(checkpoint)
    # "model" is what is scored and published (fashion_cnn's moving average), "raw_model" what trains on
    same = all(torch.equal(t, reference[which][k]) for which in ("model", "raw_model") if which in reference
               for k, t in final[which].items())
    if not same or final["epoch"] != reference["epoch"]:
        record["problems"].append("final weights differ from the uninterrupted run's")
    published = versions(work / "store", SERVED)
    record["versions"] = len(published)
    record["onnx_identical"] = bool(published) and files.sha256_file(published[-1] / MODEL_FILE) == reference["onnx"]
    if not published:
        record["problems"].append("nothing published after the resumed run")
    record["leftovers"] = sorted(p.name for p in (work / "runs" / EXPERIMENT).glob(".*.tmp")) + sorted(
        p.name for p in (work / "store" / SERVED).glob(".incoming-*"))
    return record


def run_trials(trials: int, work: Path, seed: int = 0) -> dict[str, Any]:
    """`trials` killed-and-resumed runs against one uninterrupted reference; a summary with every trial."""
    work.mkdir(parents=True, exist_ok=True)
    data = write_data(work / "data")
    started = time.monotonic()
    ref_dir = work / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    done = _start(data, ref_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = {**load_checkpoint(ref_dir / "runs" / EXPERIMENT / CHECKPOINT),
                 "onnx": files.sha256_file(latest(ref_dir / "store", SERVED) / MODEL_FILE)}
    rng = random.Random(seed)
    records = []
    for number in range(1, trials + 1):
        records.append(trial(number, data, work / "trial", reference, rng))
        print(json.dumps(records[-1]), flush=True)
    failed = [r for r in records if r["problems"]]
    return {"check": "training_kills", "passed": not failed, "problems": [p for r in failed for p in r["problems"]],
            "figures": {"trials": trials, "failed": len(failed), "seed": seed,
                        "phases": {p: sum(r["phase"] == p for r in records) for p in PHASES},
                        "resumed_from_a_checkpoint": sum(r.get("resumed", False) for r in records),
                        "onnx_identical": sum(r.get("onnx_identical", False) for r in records),
                        "two_versions_published": sum(r.get("versions", 0) > 1 for r in records),
                        "seconds": round(time.monotonic() - started)},
            "trials": records}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m reliability.training_kills", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "reliability" / "training")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--runs", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    summary = run_trials(args.trials, args.work, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1))
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
