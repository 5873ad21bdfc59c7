"""The order of training samples in an epoch: reproducible, resumable, shardable.

The order depends only on (seed, epoch), so a resumed run sees exactly the batches the
uninterrupted run would have, and each DistributedDataParallel rank takes its share of
the same order. We write this instead of using pytorch-metric-learning's MPerClassSampler
because that one draws from NumPy's global random state and knows nothing of ranks.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


def class_members(labels) -> tuple[np.ndarray, list[np.ndarray]]:
    """The classes, sorted, and each one's indices, ascending: one sort, where a mask per class
    would compare every photo with every class (1.3e11 comparisons at Google Landmarks' size)."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    return classes, np.split(order, starts[1:]) if len(order) else []


def epoch_order(labels: np.ndarray, per_class: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Indices in runs of `per_class` same-class samples, the runs shuffled.

    Each class's samples are shuffled and cut into runs (the last one topped up from the
    same class), so batches hold positives for triplet mining; per_class=1 is a plain
    permutation. Runs are dealt round-robin to `world` ranks, equally many each.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, epoch])
    runs: list[np.ndarray] = []
    for members in class_members(labels)[1]:
        members = rng.permutation(members)
        short = -len(members) % per_class
        if short:
            members = np.concatenate([members, rng.choice(members, short)])
        runs += list(members.reshape(-1, per_class))
    runs = [runs[i] for i in rng.permutation(len(runs))]
    usable = len(runs) - len(runs) % world
    mine = runs[rank:usable:world]
    return np.concatenate(mine).astype(np.int64) if mine else np.zeros(0, dtype=np.int64)


class EpochSampler(Sampler):
    """`epoch_order` as a DataLoader sampler; call set_epoch before each epoch."""

    def __init__(self, labels, per_class: int, seed: int, rank: int = 0, world: int = 1):
        self.labels, self.per_class, self.seed, self.rank, self.world = np.asarray(labels), per_class, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        return epoch_order(self.labels, self.per_class, self.seed, self.epoch, self.rank, self.world)

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return len(self.order())
