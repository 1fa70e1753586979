"""torchrun with 2 CPU processes (gloo): each trains on its shard, rank 0 alone writes, and the result is
the single-process run's, up to the order in which gradients are summed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from synthetic import write_mnist
from test_tensorboard import read_events, steps
from training.checkpoint import load_checkpoint
from training.distributed import SINGLE, World, shard
from training.registry import get_config
from training.run import RunOptions, run_experiment

REPO = Path(__file__).resolve().parents[1]
# mnist_mlp has neither augmentation nor dropout: both processes' updates are then the single process's.
NAME, EPOCHS, BATCH = "mnist_mlp", 2, 64


def test_each_process_takes_its_rows_of_every_batch() -> None:
    batch = torch.arange(10)
    halves = [shard(batch, World(rank, 2)) for rank in (0, 1)]
    assert sorted(torch.cat(halves).tolist()) == list(range(10))
    assert halves[0].tolist() == [0, 2, 4, 6, 8]
    assert shard(batch, SINGLE) is batch


def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "data")
    cfg = get_config(NAME).replace(epochs=EPOCHS, batch_size=BATCH)
    run_experiment(cfg, RunOptions(data_root=root, runs_dir=tmp_path / "single", device="cpu", publish=False))

    ddp_runs = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training.fit",
         NAME, "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--device", "cpu", "--data-root", str(root),
         "--runs-dir", str(ddp_runs), "--store", str(tmp_path / "store"), "--no-publish"],
        cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(f"{NAME}: test accuracy") == 1  # rank 0 alone reports

    run_dir = ddp_runs / NAME
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(line) for line in (tmp_path / "single" / NAME / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == EPOCHS  # one writer
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # TensorBoard: rank 0's file alone
    events = read_events(run_dir)
    assert steps(events, "train_loss") == steps(events, "test_accuracy") == list(range(1, EPOCHS + 1))
    # The processes' shards add up to the data set once per epoch, not once per process.
    assert [r["examples"] for r in records] == [r["examples"] for r in alone]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["command"].startswith("torchrun --nproc_per_node=2 -m training.fit")
    assert "2 processes (DDP)" in report["hardware"]
    assert report["export_check"]["argmax_identical"]

    single = load_checkpoint(tmp_path / "single" / NAME / "checkpoint.pt")["model"]
    parallel = load_checkpoint(run_dir / "checkpoint.pt")["model"]
    assert single.keys() == parallel.keys()
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], atol=1e-4, rtol=1e-3, msg=key)


def test_one_torchrun_process_still_joins_a_process_group(monkeypatch) -> None:
    """torchrun --nproc_per_node=1 trains through DDP and the process group (NCCL on a GPU: bench.gpu's check)."""
    import socket

    import torch.distributed as dist

    from training.distributed import join, leave, parallel, world_from_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    world = world_from_env()
    assert world.active and world.is_main and world.size == 1
    join(world, torch.device("cpu"))
    try:
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert isinstance(parallel(torch.nn.Linear(2, 1), world, torch.device("cpu")),
                          torch.nn.parallel.DistributedDataParallel)
    finally:
        leave(world)
    assert not dist.is_initialized()
