"""One run, start to finish: data, model, epochs with checkpoints, report, export, publish."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .averaging import average_of, scored
from .build import set_up
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .crossval import cross_validate
from .data import DataBundle, load_data
from .distributed import SINGLE, World, join, parallel
from .evaluation import write_report
from .export import export_onnx
from .files import append_jsonl, atomic_write_json, atomic_write_text, sha256_file
from .loop import as_inputs, evaluate, train_one_epoch
from .manifest import build_manifest, model_card
from .provenance import git_commit, hardware, library_versions, utc_now
from .registry import ExperimentConfig, config_from_dict, config_to_dict
from .speed import Speed, compiled
from .promotion import decide
from .store import live, promote, publish_model, read_manifest, read_pointer
from .tracking import Board, clear_events, final_metrics, run_hparams

log = logging.getLogger("training")

METRICS, CONFIG, ONNX = "metrics.jsonl", "config.json", "model.onnx"


class RunError(RuntimeError):
    """A run that cannot start or continue as asked; the message says why."""


@dataclass(frozen=True)
class RunOptions:
    data_root: Path = Path("data")
    runs_dir: Path = Path("runs")
    store: Path = Path("models_store")
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    resume: bool = False
    publish: bool = True          # publish to the store when the experiment has a served name
    promote: str = "auto"         # auto (live if at least the live version's figure) | always | never
    artifacts: bool = True        # figures and the ONNX export (a study's trials only need their numbers)
    command: str = ""             # recorded in reports and manifests
    world: World = SINGLE         # the torchrun processes this one trains with (training/distributed.py)
    # How fast, not what: none of these is part of the experiment's config (training/speed.py).
    precision: str = "auto"       # auto (bf16 on CUDA and for conv nets on AMX CPUs, else fp32) | fp32 | bf16
    compile: bool = False         # torch.compile the training step's module
    channels_last: bool | None = None  # None: for conv nets on a CPU, or on CUDA in bf16


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name} asked for, but no usable CUDA device is present")
    return device


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_same_run(cfg: ExperimentConfig, saved: dict[str, Any]) -> None:
    """Resuming may extend `epochs`; any other difference would silently mix two runs."""
    before = config_from_dict(saved)
    diff = [k for k, v in config_to_dict(cfg).items() if k != "epochs" and config_to_dict(before)[k] != v]
    if diff:
        raise RunError(f"cannot resume: the checkpoint's config differs in {', '.join(diff)}")
    if cfg.epochs != before.epochs and cfg.schedule != "constant":
        raise RunError(f"cannot extend a {cfg.schedule} schedule past its planned {before.epochs} epochs")


def _summary_line(cfg: ExperimentConfig, record: dict[str, Any]) -> str:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_", "test_")))
    return f"{cfg.name} epoch {record['epoch']}/{cfg.epochs}: {shown} ({record['seconds']:.1f} s)"


def train(cfg: ExperimentConfig, data: DataBundle, run_dir: Path, opts: RunOptions,
          device: torch.device, board: Board | None = None) -> tuple[torch.nn.Module, dict[str, Any], Speed]:
    """Train with a checkpoint after every epoch, each epoch's figures also on `board` (TensorBoard); return
    the model that is scored and exported (the weights' moving average when the config asks for one), the
    final checkpoint state and the speed options it trained with (training/speed.py: the run's options,
    and what they mean for this model and device)."""
    checkpoint_path, world = run_dir / CHECKPOINT, opts.world
    board = board or Board(run_dir, enabled=False)
    if world.is_main:  # temp files of writes a kill interrupted (files.atomic_write_*): nobody reads them
        for stale in run_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    if opts.resume:
        saved = load_checkpoint(checkpoint_path, map_location=device)
        _check_same_run(cfg, saved["config"])
    # Pretrained and `init_from` weights are for a new run only: a resumed one has its own in the checkpoint.
    setup = set_up(cfg, data, device, opts.runs_dir, fresh=not opts.resume, precision=opts.precision,
                   compile=opts.compile, channels_last=opts.channels_last)
    gen, model, speed, optimizer, scheduler = setup.gen, setup.model, setup.speed, setup.optimizer, setup.scheduler
    state: dict[str, Any] = {"history": [], "epoch": 0, "wall_time_s": 0.0, "init_from": setup.init_from,
                             "commands": []}
    if opts.resume:
        state.update({k: saved.get(k, state[k]) for k in state})
    state["commands"] = [*state["commands"], opts.command]
    if opts.resume:  # "model" holds the scored weights; with a moving average, "raw_model" those it averages
        model.load_state_dict(saved.get("raw_model", saved["model"]))
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        _restore_rng(saved["rng"], gen)
        if world.is_main:  # the checkpoint is the truth: drop metric lines written after it, if any
            _clear_results(run_dir)  # a finished run taken further (`--epochs N`) is not finished any more
            atomic_write_text(run_dir / METRICS, "".join(_jsonl(r) for r in state["history"]))
            atomic_write_json(run_dir / CONFIG, config_to_dict(cfg))
        board.resume_at(state["epoch"] + 1)
        log.info("resuming %s after epoch %d", cfg.name, state["epoch"])
    elif world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _clear_results(run_dir)
        clear_events(run_dir)
        (run_dir / METRICS).unlink(missing_ok=True)
        atomic_write_json(run_dir / CONFIG, config_to_dict(cfg))
    # Only rank 0 scores and saves, so only it keeps the average.
    average = average_of(model, cfg.ema_decay) if world.is_main else None
    if average is not None and opts.resume:
        average.load(saved["model"], saved["average_steps"])
    scored_model = scored(model, average)
    # DDP starts every process from rank 0's weights; checkpoints and scores use `model` (or its average),
    # never the wrappers.
    trainee = compiled(parallel(model, world, device), speed)
    augment_gen = torch.Generator(device) if world.active else None

    for epoch in range(state["epoch"], cfg.epochs):
        started = time.perf_counter()
        if world.active:  # each process augments and drops out differently; the batch order stays shared.
            # Seeded per epoch, so a resumed run draws what the uninterrupted one drew.
            epoch_seed = hash((cfg.seed, world.rank, epoch)) % 2 ** 31  # ints hash the same in every process
            augment_gen.manual_seed(epoch_seed)
            torch.manual_seed(epoch_seed)
        record = {"epoch": epoch + 1,
                  **train_one_epoch(trainee, data.train, cfg, optimizer, scheduler, gen,
                                    desc=f"{cfg.name} {epoch + 1}/{cfg.epochs}", world=world,
                                    augment_gen=augment_gen, speed=speed, average=average)}
        if not world.is_main:  # scoring, checkpoints and metrics are rank 0's
            continue
        record.update(evaluate(scored_model, data.test, cfg), lr=optimizer.param_groups[0]["lr"])
        if data.val is not None:
            record.update(evaluate(scored_model, data.val, cfg, prefix="val_"))
        record["seconds"] = time.perf_counter() - started
        state["history"].append(record)
        state["epoch"] = epoch + 1
        state["wall_time_s"] += record["seconds"]
        save_checkpoint(checkpoint_path, {
            **state, "experiment": cfg.name, "config": config_to_dict(cfg),
            "model": scored_model.state_dict(), "optimizer": optimizer.state_dict(),
            **({"raw_model": model.state_dict(), "average_steps": average.steps} if average is not None else {}),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": _rng_state(gen),
            "model_spec": {"input_shape": list(data.input_shape), "class_names": list(data.class_names),
                           "tabular": data.tabular},
            "data_source": data.source, "train_size": len(data.train), "test_size": len(data.test),
        })
        append_jsonl(run_dir / METRICS, record)
        board.epoch(record)
        log.info(_summary_line(cfg, record))
    return scored_model, state, speed


def _clear_results(run_dir: Path) -> None:
    """Delete an earlier run's report, ONNX file and figures: they must not pass for this run's."""
    for stale in [*run_dir.glob("report.*"), run_dir / ONNX, *run_dir.glob("*.png")]:
        stale.unlink(missing_ok=True)


def _command_summary(commands: list[str]) -> str:
    """The command that started the run; resumes are counted, not listed."""
    resumes = len(commands) - 1
    return commands[0] + (f" (then {resumes} x --resume)" if resumes else "")


def _jsonl(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def run_experiment(cfg: ExperimentConfig, opts: RunOptions) -> dict[str, Any] | None:
    """Train (or resume), report, export and publish one experiment; return its report (None off rank 0)."""
    device = join(opts.world, resolve_device(opts.device))
    run_dir = Path(opts.runs_dir) / cfg.name
    started = time.perf_counter()
    data = load_data(cfg, opts.data_root).to(device)
    data_load_s = time.perf_counter() - started
    if len(data.train) == 0 or len(data.test) == 0:
        raise RunError(f"{cfg.name}: empty data ({len(data.train)} train / {len(data.test)} test)")
    board = Board(run_dir, enabled=opts.world.is_main)
    try:
        model, state, speed = train(cfg, data, run_dir, opts, device, board)
        if not opts.world.is_main:
            return None
        return _finish(cfg, opts, data, device, model, state, speed, data_load_s, board)
    finally:
        board.close()


def _finish(cfg: ExperimentConfig, opts: RunOptions, data: DataBundle, device: torch.device,
            model: torch.nn.Module, state: dict[str, Any], speed: Speed, data_load_s: float,
            board: Board) -> dict[str, Any]:
    """Rank 0, after training: cross-validation where asked, the report, export, publication, TensorBoard."""
    run_dir = Path(opts.runs_dir) / cfg.name
    processes = f", {opts.world.size} processes (DDP)" if opts.world.active else ""
    # The hardware line names the speed options only when the arithmetic is not fp32 (layout and compilation
    # change speed, not precision); "speed" always says everything.
    how = f", {speed.describe()}" if speed.bf16 else ""
    facts = {"epochs": state["epoch"], "wall_time_s": state["wall_time_s"],
             "hardware": hardware(device) + processes + how, "speed": speed.describe(),
             "data_load_s": data_load_s,
             "data_source": data.source, "train_size": len(data.train), "test_size": len(data.test),
             "command": _command_summary(state["commands"]), "finished_at": utc_now(),
             "git_commit": git_commit(), "init_from": state["init_from"], "test_note": data.test_note}
    heldout = None
    if cfg.heldout_folds:
        log.info("%s: %d-fold cross-validation on the training split", cfg.name, cfg.heldout_folds)
        heldout = cross_validate(cfg, data, cfg.heldout_folds, opts.runs_dir, device)
    report = write_report(run_dir, model, data, cfg, state["history"], facts, heldout, figures=opts.artifacts)
    if opts.artifacts:
        _export_and_publish(cfg, report, facts, data, run_dir, opts)
    smoke = cfg.train_limit is not None or cfg.test_limit is not None
    board.images(run_dir, state["epoch"])
    board.text("run", f"`{facts['command']}` on {facts['hardware']}"
               + (" (a smoke run on part of the data: not comparable with the report)" if smoke else ""))
    board.hparams(run_hparams(config_to_dict(cfg), smoke), final_metrics(report, state["history"]), state["epoch"])
    # Written last: report.json is what training.report and the sweeps take for a finished run.
    atomic_write_json(run_dir / "report.json", report)
    return report


def _export_and_publish(cfg: ExperimentConfig, report: dict[str, Any], facts: dict[str, Any], data: DataBundle,
                        run_dir: Path, opts: RunOptions) -> None:
    """Export the checkpoint to ONNX (checked against PyTorch) and publish served experiments; noted in `report`."""
    checkpoint = run_dir / CHECKPOINT
    check = export_onnx(checkpoint, run_dir / ONNX, sample=as_inputs(data.test.inputs[:16].cpu()))
    report["export_check"] = check
    if cfg.served_as and opts.publish:
        provenance = {**facts, "checkpoint_sha256": sha256_file(checkpoint), "libraries": library_versions()}
        manifest = build_manifest(cfg, report, check, data.class_names, data.input_shape, provenance, data.tabular)
        report["publication"] = _publish_and_gate(cfg.served_as, run_dir, manifest, cfg.description, opts)
        report["published"] = report["publication"]["folder"]
        log.info("%s: %s", cfg.name, report["publication"]["sentence"])
        with open(run_dir / "report.md", "a", encoding="utf-8") as md:
            md.write(f"\n## Publication\n\n{report['publication']['sentence']}.\n")


def _publish_and_gate(name: str, run_dir: Path, manifest: dict[str, Any], description: str,
                      opts: RunOptions) -> dict[str, Any]:
    """Publish the run's version of `name` as a candidate; make it live if training.promotion says so.

    The version live until now is pinned first (live.json): without a pointer the highest version is live,
    and a service following the store would otherwise serve the candidate the moment it appears.
    """
    current = live(opts.store, name) if (opts.store / name).is_dir() else None
    if current is not None and read_pointer(opts.store, name) is None:
        promote(opts.store, name, current.name)
    folder = publish_model(opts.store, name, run_dir / ONNX, manifest, model_card(manifest, name, description))
    decision = decide(opts.promote, read_manifest(folder), read_manifest(current) if current else None)
    if decision.promote:
        promote(opts.store, name, folder.name)
    return {"folder": str(folder), "version": folder.name, "promoted": decision.promote,
            "sentence": decision.sentence(folder.name)}
