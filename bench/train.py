"""Time to the report's figure: our fashion_cnn recipe against Report A's exact recipe, same run, same machine.

    python -m bench.train [--cap 4] [--device auto] [--data-root data] [--target 0.9791]

Both train Report A's CNN on the five-class FashionMNIST task and are scored on its 5,000 test images
after every chunk of 30,000 training samples (one of our epochs, a quarter of a report epoch). Chunks
alternate between the two so that load from other processes hits both alike. The clock runs while a
recipe trains (data loading included) and stops while it is scored. A recipe stops when it reaches the
target, when its planned epochs are done, or when it has trained `--cap` times as long as ours needed:
then its time is a lower bound and the ratio is written "at least". Ours is scored through its weights'
moving average; the weights as trained are scored too and shown beside it, never used to stop.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from bench.report_recipe import COPIES, report_config, report_loader, report_step
from training.averaging import average_of, scored
from training.build import set_up
from training.data import DataBundle, load_data
from training.loop import evaluate, train_one_epoch
from training.provenance import hardware, utc_now
from training.registry import ExperimentConfig, get_config
from training.run import resolve_device

REPORT_EPOCHS = 15  # Report A's schedule: 15 passes over the 4x data


@dataclasses.dataclass
class Contender:
    """A recipe being timed: `chunks` trains it chunk by chunk; the rest is its tally so far."""

    name: str
    cfg: ExperimentConfig
    model: torch.nn.Module   # the one that trains
    scored: torch.nn.Module  # the one scored: `model`, or its weights' moving average
    chunks: Iterator[int]  # each next() trains one chunk and returns the samples it used
    seconds: float = 0.0
    samples: int = 0
    accuracy: float = 0.0
    reached: bool = False
    stopped: str = ""


def ours(data: DataBundle, device: torch.device) -> Contender:
    cfg = get_config("fashion_cnn")
    run = set_up(cfg, data, device, runs_dir=None)  # as training.fit sets up a new run
    model, speed = run.model, run.speed
    average = average_of(model, cfg.ema_decay)

    def chunks() -> Iterator[int]:
        for _ in range(cfg.epochs):
            yield train_one_epoch(model, data.train, cfg, run.optimizer, run.scheduler, run.gen, speed=speed,
                                  average=average)["examples"]

    averaged = f", weights' moving average {cfg.ema_decay:g}" if average is not None else ""
    return Contender(f"ours (`fashion_cnn`: Adam 2e-3 one-cycle{averaged}, batch {cfg.batch_size}, tensor batches, "
                     f"{speed.describe()})", cfg, model, scored(model, average), chunks())


def report(data: DataBundle, device: torch.device, chunk_samples: int) -> Contender:
    cfg = report_config()
    run = set_up(cfg, data, device, runs_dir=None, precision="fp32", channels_last=False)  # as the course ran it
    model, optimizer = run.model, run.optimizer
    images, labels = data.train.inputs[:, 0].cpu(), data.train.labels.cpu()

    def chunks() -> Iterator[int]:
        done = 0
        for _ in range(REPORT_EPOCHS):
            for x, y in report_loader(images, labels, cfg):
                report_step(model, optimizer, x.to(device), y.to(device))
                done += len(y)
                if done >= chunk_samples:
                    yield done
                    done = 0
        if done:
            yield done

    return Contender(f"Report A (Adam 1e-3, batch 100, {COPIES}x data, per-sample DataLoader)", cfg, model,
                     model, chunks())


def advance(c: Contender, data: DataBundle, target: float, limit_s: Callable[[], float]) -> None:
    """Train one chunk of `c`, then score it; mark it stopped when it is done."""
    c.model.train()  # scoring left it in eval mode
    start = time.perf_counter()
    samples = next(c.chunks, 0)
    if device_is_cuda(data):
        torch.cuda.synchronize()
    c.seconds += time.perf_counter() - start
    if not samples:
        c.stopped = "planned epochs done"
        return
    c.samples += samples
    c.accuracy = evaluate(c.scored, data.test, c.cfg)["test_accuracy"]
    raw = ""  # the weights as trained, when a moving average is what is scored: shown, never used to stop
    if c.scored is not c.model:
        raw = f" (weights as trained: {100 * evaluate(c.model, data.test, c.cfg)['test_accuracy']:.2f}%)"
    print(f"  {c.name.split(' ')[0]}: {c.samples:,} samples, {c.seconds:,.0f} s, {100 * c.accuracy:.2f}%{raw}",
          flush=True)
    if c.accuracy >= target:
        c.reached, c.stopped = True, "target reached"
    elif c.seconds >= limit_s():
        c.stopped = "cap reached"


def device_is_cuda(data: DataBundle) -> bool:
    return data.train.inputs.device.type == "cuda"


def table(theirs: Contender, mine: Contender, target: float) -> str:
    """Markdown: the report's recipe first; our speed-up is a lower bound when theirs never got there."""
    speedup = theirs.seconds / mine.seconds
    ratio = f"{speedup:.2f}x" if theirs.reached else f"at least {speedup:.2f}x"
    rows = [f"| recipe | reached {100 * target:.2f}% | samples | training time | last accuracy | speed-up |",
            "|---|---|---:|---:|---:|---:|"]
    for c, shown in ((theirs, "1.00x"), (mine, ratio if mine.reached else "n/a (ours missed the target)")):
        rows.append(f"| {c.name} | {'yes' if c.reached else 'no, ' + c.stopped} | {c.samples:,} "
                    f"| {c.seconds / 60:.1f} min | {100 * c.accuracy:.2f}% | {shown} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cap", type=float, default=4.0,
                   help="stop the report's recipe after this many times our time to the target")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--target", type=float, default=get_config("fashion_cnn").target,
                   help="test accuracy to reach (default: Report A's 0.9791)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    started = time.perf_counter()
    data = load_data(get_config("fashion_cnn"), args.data_root).to(device)
    load_s = time.perf_counter() - started
    target = args.target
    fast = ours(data, device)
    slow = report(data, device, chunk_samples=len(data.train))

    def cap() -> float:  # until ours has reached the target, the report's recipe runs on
        return args.cap * fast.seconds if fast.reached else math.inf

    while not (fast.stopped and slow.stopped):
        for c in (fast, slow):
            if not c.stopped:
                advance(c, data, target, cap if c is slow else (lambda: math.inf))
    print(f"\nTime to {100 * target:.2f}% on the five-class FashionMNIST test set, {utc_now()}, "
          f"{hardware(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"data loaded once in {load_s:.1f} s; `python -m bench.train --cap {args.cap:g} --device {args.device} --target {target:g}`\n")
    print(table(slow, fast, target))


if __name__ == "__main__":
    main()
