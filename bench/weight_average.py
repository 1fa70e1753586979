"""The weights' moving average against the weights as trained, scored on a validation split after every epoch.

    python -m bench.weight_average [NAME] [--decays 0.98 0.99 0.995 0.998] [--validation 0.1667]
                                   [--epochs N] [--data-root data] [--runs-dir runs]

Trains NAME's registered recipe (default fashion_cnn) once, as training.fit would on this device, on its
training split less a held-out `--validation` share, and keeps a moving average of the weights at each
decay (training/averaging.py). After every epoch it scores the weights as trained and every average on the
held-out images. The test split is never read, so a decay chosen from this table is not fitted to the
test set that the report's figure is measured on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from training.averaging import WeightAverage
from training.build import set_up
from training.data import load_data
from training.loop import evaluate, train_one_epoch
from training.provenance import hardware, utc_now
from training.registry import get_config
from training.run import resolve_device


class Averages:
    """Several moving averages of one model, updated together after every step."""

    def __init__(self, model: torch.nn.Module, decays: list[float]):
        self.by_decay = {d: WeightAverage(model, d) for d in decays}

    def update(self) -> None:
        for average in self.by_decay.values():
            average.update()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", nargs="?", default="fashion_cnn", help="a registered experiment (default fashion_cnn)")
    p.add_argument("--decays", type=float, nargs="+", default=[0.98, 0.99, 0.995, 0.998])
    p.add_argument("--validation", type=float, default=1 / 6,
                   help="share of the training split held out and scored (default 1/6: 5,000 of fashion's 30,000)")
    p.add_argument("--epochs", type=int, help="default: the experiment's")
    p.add_argument("--train-limit", type=int, help="use only N training images, spread over the split (smoke runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where an `init_from` run is found")
    args = p.parse_args(argv)

    if not 0 < args.validation < 1:
        p.error(f"--validation must be a share between 0 and 1, got {args.validation}")
    registered = get_config(args.name)
    cfg = registered.replace(validation_split=args.validation, ema_decay=0.0, train_limit=args.train_limit,
                             epochs=args.epochs or registered.epochs)
    device = resolve_device(args.device)
    data = load_data(cfg, args.data_root).to(device)
    run = set_up(cfg, data, device, args.runs_dir)  # as training.fit sets up a new run
    model, speed = run.model, run.speed
    averages = Averages(model, args.decays)

    print(f"{args.name}: {len(data.train):,} training images, {len(data.val):,} held out; {utc_now()}, "
          f"{hardware(device)}, {speed.describe()}, {torch.get_num_threads()} threads\n")
    print("| samples | as trained | " + " | ".join(f"average {d:g}" for d in args.decays) + " | seconds |")
    print("|---:|---:|" + "---:|" * len(args.decays) + "---:|")
    seen, started = 0, time.perf_counter()
    for _ in range(cfg.epochs):
        seen += train_one_epoch(model, data.train, cfg, run.optimizer, run.scheduler, run.gen, speed=speed,
                                average=averages)["examples"]
        scores = [evaluate(m, data.val, cfg, prefix="val_")["val_accuracy"]
                  for m in (model, *(a.model for a in averages.by_decay.values()))]
        print(f"| {seen:,} | " + " | ".join(f"{100 * s:.2f}%" for s in scores)
              + f" | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
