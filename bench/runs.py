"""Whole training runs against the clock: fashion_cnn to 98% and mnist_cnn32 to 99% test accuracy.

    python -m bench.runs [--device auto] [--precision auto] [--compile] [--target NAME=VALUE] [NAME ...]

Each experiment runs in this process as `python -m training.fit NAME --no-publish` would, into a temporary
runs folder: data loading, every epoch with its scoring and checkpoint, the report with its figures and
the ONNX export (unless --no-artifacts). The device is initialised before the clock starts, so process start-up (imports, the CUDA
context) is not counted. Time to target is data loading plus the seconds of each epoch (training and
scoring, from the run's metrics.jsonl) up to the first whose test accuracy reaches the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.provenance import hardware, utc_now
from training.registry import get_config
from training.run import METRICS, RunOptions, resolve_device, run_experiment
from training.speed import PRECISIONS

TARGETS = {"fashion_cnn": 0.98, "mnist_cnn32": 0.99}  # issue 6's goals on one GPU


@dataclass(frozen=True)
class Timing:
    name: str
    target: float
    wall_s: float                 # the whole run_experiment call
    load_s: float                 # data loading, included in the two times below
    epochs_s: float               # load_s plus every epoch
    reached_epoch: int | None     # the first epoch at the target; None when no epoch got there
    to_target_s: float | None
    accuracy: float               # after the last epoch
    speed: str                    # how it trained: "bf16 autocast, channels-last", "fp32", ...


def time_to_target(records: list[dict[str, Any]], load_s: float, target: float) -> tuple[int | None, float | None]:
    """(first epoch whose test accuracy reaches `target`, load_s + seconds up to and including it)."""
    elapsed = load_s
    for record in records:
        elapsed += record["seconds"]
        if record["test_accuracy"] >= target:
            return record["epoch"], elapsed
    return None, None


def time_run(name: str, target: float, opts: RunOptions, epochs: int | None) -> Timing:
    cfg = get_config(name)
    cfg = cfg if epochs is None else cfg.replace(epochs=epochs)
    started = time.perf_counter()
    report = run_experiment(cfg, opts)
    wall_s = time.perf_counter() - started
    lines = (Path(opts.runs_dir) / name / METRICS).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    epoch, to_target = time_to_target(records, report["data_load_s"], target)
    return Timing(name, target, wall_s, report["data_load_s"], report["data_load_s"] + report["wall_time_s"],
                  epoch, to_target, report["metrics"]["test_accuracy"], report["speed"])


def table(timings: list[Timing]) -> str:
    rows = ["| experiment | target | time to target | epochs (incl. data) | whole run | data loading "
            "| final accuracy | trained with |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for t in timings:
        reached = f"{t.to_target_s:.1f} s (epoch {t.reached_epoch})" if t.reached_epoch else "not reached"
        rows.append(f"| `{t.name}` | {100 * t.target:.2f}% | {reached} | {t.epochs_s:.1f} s | {t.wall_s:.1f} s "
                    f"| {t.load_s:.1f} s | {100 * t.accuracy:.2f}% | {t.speed} |")
    return "\n".join(rows)


def _targets(names: list[str], overrides: list[str]) -> dict[str, float]:
    """Issue 6's goal where it set one, else the experiment's report figure; NAME=VALUE overrides."""
    targets = {name: TARGETS.get(name, get_config(name).target) for name in names}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in targets or not value:
            raise SystemExit(f"--target {item}: expected NAME=VALUE for one of {', '.join(targets)}")
        targets[name] = float(value)
    for name, target in targets.items():
        if target is None or get_config(name).metric != "accuracy":
            raise SystemExit(f"{name}: no accuracy target; give one with --target {name}=VALUE")
    return targets


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", default=list(TARGETS), help=f"experiments (default: {' '.join(TARGETS)})")
    p.add_argument("--target", action="append", default=[], metavar="NAME=VALUE",
                   help="test accuracy to time, per experiment (default: 0.98 fashion_cnn, 0.99 mnist_cnn32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as training.fit's")
    p.add_argument("--compile", action="store_true", help="as training.fit's")
    p.add_argument("--epochs", type=int, help="override every experiment's epochs (smoke runs)")
    p.add_argument("--no-artifacts", action="store_true",
                   help="skip the figures and the ONNX export (seconds per run), as a sweep's trials do")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    args = p.parse_args(argv)
    targets = _targets(args.names, args.target)
    device = resolve_device(args.device)
    torch.zeros(1, device=device)  # start-up (the CUDA context) is not the run's time
    command = " ".join(["python -m bench.runs", *(sys.argv[1:] if argv is None else argv)])
    timings = []
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as tmp:
        for name, target in targets.items():
            opts = RunOptions(data_root=args.data_root, runs_dir=Path(tmp) / "runs", store=Path(tmp) / "store",
                              device=args.device, publish=False, command=command, precision=args.precision,
                              compile=args.compile, artifacts=not args.no_artifacts)
            timings.append(time_run(name, target, opts, args.epochs))
            print(f"  {name}: {100 * timings[-1].accuracy:.2f}% in {timings[-1].wall_s:.1f} s", flush=True)
    print(f"\nWhole runs, {utc_now()}, {hardware(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; `{command}`\n")
    print(table(timings))


if __name__ == "__main__":
    main()
