"""Training throughput: our tensor-resident loop against the reports' per-sample DataLoader loop.

    python -m bench.train_loop [--samples 6000] [--rounds 3] [--data-root data]

Same model (Report A's CNN), same five-class FashionMNIST, same batch size and optimizer, same
machine, interleaved rounds so drift hits both alike. Prints a Markdown table with the ratio, and a
second one that times each data path alone (batches made and thrown away, no model): the share of a
training pass that the data path can take, which is all a faster loop can win back.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from bench.report_recipe import COPIES, report_config, report_loader, report_step
from training.build import model_for, optimizer_for
from training.data import load_data
from training.loop import batches, train_one_epoch
from training.provenance import hardware, utc_now


def time_ours(cfg, data, samples: int) -> float:
    torch.manual_seed(0)
    model = model_for(cfg, data.input_shape, len(data.class_names))
    optimizer = optimizer_for(cfg, model)
    subset = data.train.head(samples)
    start = time.perf_counter()
    train_one_epoch(model, subset, cfg, optimizer, None, torch.Generator().manual_seed(0))
    return len(subset) / (time.perf_counter() - start)


def _report_loader(cfg, data, samples: int):
    """The report's 4x loader over a quarter of `samples` images: the same number of samples, augmented as
    the report did."""
    subset = data.train.head(samples // COPIES)
    return report_loader(subset.inputs[:, 0], subset.labels, cfg)


def time_per_sample(cfg, data, samples: int) -> float:
    torch.manual_seed(0)
    model = model_for(cfg, data.input_shape, len(data.class_names))
    optimizer = optimizer_for(cfg, model)
    loader = _report_loader(cfg, data, samples)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        report_step(model, optimizer, x, y)
    return len(loader.dataset) / (time.perf_counter() - start)


def data_ours(cfg, data, samples: int) -> float:
    """The batches train_one_epoch trains on (training.loop.batches), no model."""
    subset = data.train.head(samples)
    start = time.perf_counter()
    for _ in batches(subset, cfg, torch.Generator().manual_seed(0)):
        pass
    return len(subset) / (time.perf_counter() - start)


def data_per_sample(cfg, data, samples: int) -> float:
    """The report's DataLoader iterated, no model."""
    loader = _report_loader(cfg, data, samples)
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(loader.dataset) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=6000, help="training images per timed pass")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    args = p.parse_args(argv)
    cfg = report_config()  # both loops run the report's recipe: only the data path differs
    data = load_data(cfg, args.data_root)
    time_ours(cfg, data, 500)  # warm-up: first-call allocations, thread pools
    ours, baseline = [], []
    for _ in range(args.rounds):
        ours.append(time_ours(cfg, data, args.samples))
        baseline.append(time_per_sample(cfg, data, args.samples))
    data_o = statistics.median(data_ours(cfg, data, args.samples) for _ in range(args.rounds))
    data_b = statistics.median(data_per_sample(cfg, data, args.samples) for _ in range(args.rounds))
    o, b = statistics.median(ours), statistics.median(baseline)
    print(f"Training throughput, {utc_now()}, {hardware()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; `python -m bench.train_loop --samples {args.samples} "
          f"--rounds {args.rounds}`\n")
    print("| loop | samples/s (median) | rounds | ratio |\n|---|---:|---|---:|")
    print(f"| per-sample DataLoader (reports' style) | {b:,.0f} | {', '.join(f'{v:,.0f}' for v in baseline)} | 1.00x |")
    print(f"| tensor-resident batches (ours) | {o:,.0f} | {', '.join(f'{v:,.0f}' for v in ours)} | {o / b:.2f}x |")
    print("\n| data path alone | samples/s (median) | share of a training pass |\n|---|---:|---:|")
    print(f"| per-sample DataLoader (reports' style) | {data_b:,.0f} | {100 * b / data_b:.1f}% |")
    print(f"| tensor-resident batches (ours) | {data_o:,.0f} | {100 * o / data_o:.1f}% |")


if __name__ == "__main__":
    main()
