"""Several processes under `torchrun`: who am I, agreeing on one decision, sharing lists.

`torchrun --nproc_per_node N -m competition.cli train --regime full ...` starts N
processes; each trains on its share of every epoch (DistributedDataParallel averages
the gradients), and rank 0 alone validates and writes the run folder. Under `submit`
each process embeds its share of the photos into the shared embedding store and rank 0
searches. The backend is NCCL on GPUs and gloo on CPU (across nodes too, with torchrun's
--nnodes and rendezvous flags). Without torchrun's environment this is a no-op.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device | None:
        """The GPU this rank owns, when it owns one."""
        if self.active and torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return None

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision (e.g. stop early), the same on every rank."""
        if not self.active:
            return flag
        on_gpu = dist.get_backend() == "nccl"  # NCCL only moves GPU tensors
        value = torch.tensor([int(flag)], device=torch.device("cuda") if on_gpu else None)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def gather(self, items: list) -> list:
        """Every rank's list joined, in rank order, on every rank."""
        if not self.active:
            return list(items)
        parts: list = [None] * self.world
        dist.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def init_distributed() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # a rank that finishes first (a submit's other ranks only embed) must not exit with the
        # group's threads alive: that aborts it ("terminate called without an active exception")
        atexit.register(_leave_group)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
