"""python -m training.fit NAME [overrides]: train, evaluate, checkpoint, export and publish one experiment."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .data import DataNotFound
from .distributed import leave, world_from_env
from .promotion import POLICIES
from .registry import EXPERIMENTS, UnknownExperiment, get_config
from .export import ExportError
from .models import PretrainedUnavailable
from .run import RunError, RunOptions, run_experiment
from .speed import PRECISIONS

# --quick: enough to prove the whole pipeline works, in seconds on a laptop.
QUICK = {"epochs": 1, "train_limit": 2048, "test_limit": 512}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.fit",
        description="Train one named experiment, evaluate it on the official test split, write its "
                    "report, checkpoint it, export it to ONNX and (for served models) publish it.")
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments with the report figure to beat")
    p.add_argument("--epochs", type=int, help="passes over the training set (default: the experiment's)")
    p.add_argument("--batch-size", type=int, help="training batch size")
    p.add_argument("--lr", type=float, help="(peak) learning rate")
    p.add_argument("--seed", type=int, help="random seed for init, data order and augmentation")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    p.add_argument("--data-root", type=Path, default=Path("data"),
                   help="data folder holding one folder per data set in torchvision's layout (MNIST/raw, "
                        "FashionMNIST/raw), cifar10/{train,test}, greek/train, heart/heart.csv; or the data "
                        "set's own ImageFolder tree, class folders or CSV file. Filled from Debian's "
                        "packages or a download where possible (default: ./data)")
    p.add_argument("--weights", help="pretrained weights to start from: a torchvision weights name (e.g. "
                                     "IMAGENET1K_V2), or none to train from scratch (default: the experiment's)")
    p.add_argument("--runs-dir", "--output-dir", dest="runs_dir", type=Path, default=Path("runs"),
                   help="where run folders go: checkpoint, metrics, report, plots (default: ./runs)")
    p.add_argument("--store", type=Path, default=Path("models_store"),
                   help="model store to publish into (default: ./models_store)")
    p.add_argument("--no-publish", action="store_true", help="export the ONNX model but do not publish it")
    p.add_argument("--promote", choices=POLICIES, default="auto",
                   help="make the published version live: auto (when nothing is live, or when its test figure is at "
                        "least the live version's on the same test split), always, or never (publish a candidate "
                        "for python -m training.store promote)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUNS_DIR/NAME from its last checkpoint; with --epochs, "
                        "train further than planned (constant learning-rate schedules only)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="training arithmetic: auto is bf16 autocast on a GPU; on a CPU, bf16 autocast for conv "
                        "nets where the CPU has AMX (bf16 matrix units) and fp32 otherwise; conv nets also take "
                        "channels-last images. CPU runs stay bitwise repeatable; evaluation is always fp32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step: compiling costs seconds up front (cached on disk "
                        "afterwards), so it helps only runs long enough to pay that back")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['epochs']} epoch on {QUICK['train_limit']} training and "
                        f"{QUICK['test_limit']} test images spread over each split (every class); never "
                        "published; --epochs and the other flags given with it still apply")
    return p


def list_experiments() -> str:
    width = max(map(len, EXPERIMENTS))
    return "\n".join(f"{name:<{width}}  {cfg.description}\n{'':<{width}}  to beat: {cfg.report_figure}"
                     for name, cfg in EXPERIMENTS.items())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        print(list_experiments())
        return 0
    if not args.name:
        _parser().error("an experiment name is required (see --list)")
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("training").setLevel(logging.INFO)  # not the exporter's INFO chatter
    try:
        cfg = get_config(args.name)
    except UnknownExperiment as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                                   "seed": args.seed}.items() if v is not None}
    if args.weights is not None:
        overrides["pretrained"] = None if args.weights.lower() == "none" else args.weights
    if args.quick:
        overrides = {**QUICK, **overrides}
    cfg = cfg.replace(**overrides)
    argv_shown = sys.argv[1:] if argv is None else argv
    world = world_from_env()  # under torchrun: this process's rank among WORLD_SIZE
    launcher = f"torchrun --nproc_per_node={world.size} -m training.fit" if world.active else "python -m training.fit"
    smoke = cfg.train_limit is not None or cfg.test_limit is not None  # part of the data: never published
    opts = RunOptions(data_root=args.data_root, runs_dir=args.runs_dir, store=args.store, device=args.device,
                      resume=args.resume, publish=not (args.no_publish or smoke), promote=args.promote,
                      command=" ".join([launcher, *argv_shown]), world=world, precision=args.precision,
                      compile=args.compile)
    try:
        report = run_experiment(cfg, opts)
    except (DataNotFound, CheckpointError, ExportError, RunError, PretrainedUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    leave(world)
    if report is None:  # not rank 0: it reports for everyone
        return 0
    metrics = report["metrics"]
    headline = (f"test accuracy {100 * metrics['test_accuracy']:.2f}%" if "test_accuracy" in metrics
                else f"test MSE {metrics['test_mse']:.5f}")
    print(f"{cfg.name}: {headline}; report in {args.runs_dir / cfg.name / 'report.md'}")
    if "publication" in report:
        print(f"{cfg.served_as}: {report['publication']['sentence']}")
    elif cfg.served_as:
        print(f"{cfg.served_as}: not published ({'a smoke run on part of the data' if smoke else '--no-publish'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
