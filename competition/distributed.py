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
from datetime import timedelta

import torch
import torch.distributed as dist

from competition.errors import CompeteError


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

    def share(self, value):
        """Rank 0's value (any picklable object), the same on every rank: a decision made once, not
        remade by each rank (GPU arithmetic may differ in its last bits between them)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

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


# How long a rank waits for the others at a barrier or broadcast before the job is stopped. NCCL's
# default, 10 minutes, is shorter than rank 0's validation of a Google-Landmarks-size pool on a
# 4-core machine while the others wait; COMPETE_DIST_TIMEOUT (minutes) sets another.
DIST_TIMEOUT_MINUTES = 180


def dist_timeout() -> timedelta:
    raw = os.environ.get("COMPETE_DIST_TIMEOUT", "")
    try:
        minutes = float(raw) if raw else DIST_TIMEOUT_MINUTES
    except ValueError:
        raise CompeteError(f"COMPETE_DIST_TIMEOUT must be minutes (a number), not {raw!r}") from None
    if not 0 < minutes <= 7 * 24 * 60:
        raise CompeteError(f"COMPETE_DIST_TIMEOUT must be between 0 and 10080 minutes, not {raw}")
    return timedelta(minutes=minutes)


def init_distributed() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=dist_timeout())
        # a rank that finishes first (a submit's other ranks only embed) must not exit with the
        # group's threads alive: that aborts it ("terminate called without an active exception")
        atexit.register(_leave_group)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
