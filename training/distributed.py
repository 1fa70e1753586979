"""Data-parallel training under torchrun: which process this is, and the few places where that matters.

    torchrun --nproc_per_node=2 -m training.fit fashion_cnn      # gloo on CPU, NCCL on GPUs

Every process loads the (small) data set whole and trains on its shard of each batch: the batch order is
drawn from the same seeded generator everywhere, process r takes rows r, r + N, ... of each batch of
`batch_size`, and DistributedDataParallel averages the gradients, so an update sees the same global batch
as a single process would. Augmentation and dropout draw from per-process generators. Only rank 0
writes: checkpoints, metrics, reports, the export and the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # by torchrun: one process alone joins a process group too (one GPU checks NCCL)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1 or self.launched


SINGLE = World()


def world_from_env() -> World:
    """The torchrun process this is (RANK, WORLD_SIZE, LOCAL_RANK), or SINGLE outside torchrun."""
    if "RANK" not in os.environ:
        return SINGLE
    return World(int(os.environ["RANK"]), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")), launched=True)


def join(world: World, device: torch.device) -> torch.device:
    """Join the process group; on GPUs each process takes the GPU of its local rank. Returns the device."""
    if not world.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.barrier()  # the others wait while rank 0 reports, exports and publishes
        dist.destroy_process_group()


def parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module to train: DistributedDataParallel around `model` (same parameters) under torchrun."""
    if not world.active:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def shard(index: torch.Tensor, world: World) -> torch.Tensor:
    """This process's rows of one global batch."""
    return index[world.rank::world.size] if world.active else index


def sum_over_processes(values: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise sum of a small tensor across processes (train loss and accuracy tallies)."""
    if world.active:
        values = values.clone()
        dist.all_reduce(values)
    return values
