"""What each speed option buys a training pass: channels-last, bf16 autocast, torch.compile and batch size,
against plain fp32 at the registered batch size, for one experiment on one device.

    python -m bench.train_step [NAME] [--device auto] [--samples 6000] [--rounds 3] [--skip WORD ...]
                               [--data-root data]

Every variant trains with training.loop.train_one_epoch (the loop runs use) on the same first SAMPLES
training images, each with its own model and optimizer, in interleaved rounds so that drift hits all
alike; a figure is the median over rounds. Each variant's first pass is untimed and reported as its
warm-up: for torch.compile that is the compile time a run must pay back.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from training.build import model_for, optimizer_for
from training.data import DataBundle, TensorData, load_data
from training.loop import train_one_epoch
from training.provenance import hardware, utc_now
from training.registry import ExperimentConfig, get_config
from training.run import resolve_device
from training.speed import Speed, compiled, has_convs, prepare

BASELINE = "fp32"


@dataclasses.dataclass
class Variant:
    """One way to train the same model; `rates` collects samples/s per round."""

    speed: Speed
    batch_size: int
    trainee: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    warm_up_s: float = 0.0
    rates: list[float] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return self.speed.describe()


def variants(cfg: ExperimentConfig, conv_net: bool, skip: list[str] = ()) -> dict[str, Variant]:
    """The registered recipe in fp32 first (the baseline), then one change at a time, less those whose
    name holds a word of `skip`."""
    b = cfg.batch_size
    speeds = [Speed(), Speed(bf16=True)]
    if conv_net:  # channels-last moves conv weights and feature maps; nothing else has them
        speeds += [Speed(channels_last=True), Speed(bf16=True, channels_last=True)]
    speeds.append(Speed(compile=True))
    found = {s.describe(): Variant(s, b) for s in speeds}
    for factor, word in ((0.5, "half"), (2, "double")):
        size = max(2, int(b * factor))
        found[f"fp32, batch {size} ({word})"] = Variant(Speed(), size)
    return {name: v for name, v in found.items() if name == BASELINE or not any(w in name for w in skip)}


def _one_pass(v: Variant, cfg: ExperimentConfig, data: TensorData, device: torch.device) -> float:
    """Samples/s of one training pass over `data` (the loop's last step copies its tallies to the host,
    so the pass is finished when it returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train_one_epoch(v.trainee, data, dataclasses.replace(cfg, batch_size=v.batch_size), v.optimizer, None,
                    torch.Generator(device=device).manual_seed(0), desc=v.label, speed=v.speed)
    return len(data) / (time.perf_counter() - start)


def set_up(v: Variant, cfg: ExperimentConfig, bundle: DataBundle, data: TensorData, device: torch.device) -> None:
    torch.manual_seed(cfg.seed)
    # Random weights even where the experiment fine-tunes pretrained ones: the speed is the same.
    model = model_for(cfg, bundle.input_shape, len(bundle.class_names), bundle.tabular, pretrained=False)
    model = prepare(model.to(device), v.speed)
    v.optimizer = optimizer_for(cfg, model)
    v.trainee = compiled(model, v.speed)
    start = time.perf_counter()
    _one_pass(v, cfg, data, device)  # first-call costs: allocations, kernel choice, compilation
    v.warm_up_s = time.perf_counter() - start


def table(found: dict[str, Variant]) -> str:
    base = statistics.median(found[BASELINE].rates)
    rows = ["| variant | batch | samples/s (median) | rounds | first pass (untimed) | ratio |",
            "|---|---:|---:|---|---:|---:|"]
    for name, v in found.items():
        rate = statistics.median(v.rates)
        rows.append(f"| {name} | {v.batch_size} | {rate:,.0f} | {', '.join(f'{r:,.0f}' for r in v.rates)} "
                    f"| {v.warm_up_s:.1f} s | {rate / base:.2f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", default="fashion_cnn", help="registered experiment (default: fashion_cnn)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--samples", type=int, default=6000, help="training images per timed pass")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--skip", nargs="+", action="extend", default=[], metavar="WORD",
                   help="leave out the variants whose name holds WORD: bf16 (slow on CPUs without bf16 units), "
                        "torch.compile (needs a C++ compiler), channels-last, batch")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    args = p.parse_args(argv)
    cfg, device = get_config(args.name), resolve_device(args.device)
    bundle = load_data(cfg, args.data_root)
    data = bundle.train.head(args.samples).to(device)
    probe = model_for(cfg, bundle.input_shape, len(bundle.class_names), bundle.tabular, pretrained=False)
    found = variants(cfg, has_convs(probe), args.skip)
    for v in found.values():
        set_up(v, cfg, bundle, data, device)
    for round_ in range(args.rounds):
        order = list(found.values())
        for v in order if round_ % 2 == 0 else reversed(order):
            v.rates.append(_one_pass(v, cfg, data, device))
    command = f"python -m bench.train_step {args.name} --device {args.device} --samples {args.samples} " \
              f"--rounds {args.rounds}" + "".join(f" --skip {w}" for w in args.skip)
    print(f"Training pass by speed option, {args.name}, {utc_now()}, {hardware(device)}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; `{command}`\n")
    print(table(found))


if __name__ == "__main__":
    main()
