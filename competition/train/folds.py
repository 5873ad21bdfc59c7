"""Validation's folds: which photos train and which are held out in each.

Each fold holds out a share of the training landmarks whole (stand-ins for landmarks the
model will meet only at test time) and a few photos of every other landmark (new photos of
seen landmarks); over the folds every landmark is unseen once. Augmented copies never enter a
pool and no photo of a held-out landmark trains. Past POOL_MOST photos a pool draws a seeded
sample of its landmarks. How the pools are scored: train/validation.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from competition.train.sampling import class_members

log = logging.getLogger(__name__)

# Above this many photos a fold's pool draws its landmarks: Google Landmarks' 1.58M photos would give
# pools of ~0.7M, each photo to be classified over 81k landmarks for the label fusion's choice; 100k
# photos of ~12k landmarks judge a setting as well (the fixed design: a large gallery, a sample
# of queries) at a seventh of the cost
POOL_MOST = 100_000


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # indices of the photos that train
    pool: np.ndarray  # indices of the held-out photos
    unseen: np.ndarray  # per pool photo: its landmark is held out whole


def class_folds(
    labels: Sequence[str],
    folds: int = 4,
    seed: int = 0,
    photo_share: float = 0.25,
    hold_out_landmarks: bool = True,
    most_pool: int = POOL_MOST,
) -> list[Fold]:
    """Folds over landmarks; each keeps at least two training landmarks.

    A seen landmark lends max(2, photo_share of its photos) to the pool when it keeps two
    for training (two: so a held-out photo has a match in the pool). Without
    `hold_out_landmarks` (closed-set validation: every query's landmark trains) no landmark
    is held out whole; each fold lends other photos of every landmark. A pool that would
    hold more than `most_pool` photos draws its landmarks (a seeded sample, held-out and
    lending ones alike); the others' photos all train in that fold."""
    labels = np.asarray(labels)
    classes, members_of = class_members(labels)
    sizes = np.array([len(m) for m in members_of])
    lent_counts = np.array([_lent_count(size, photo_share) for size in sizes])
    rng = np.random.default_rng([seed, 4242])
    shuffled = rng.permutation(classes)
    count = max(1, min(folds, len(classes)))
    result = []
    for fold in range(count):
        held_out = np.isin(classes, shuffled[fold::count]) if hold_out_landmarks else np.zeros(len(classes), bool)
        if len(classes) - held_out.sum() < 2:
            held_out[:] = False
        drawn = _drawn(np.where(held_out, sizes, lent_counts), most_pool, [seed, 4244, fold])
        if not drawn.all():
            log.info("fold %d: its pool draws %d of %d landmarks (at most %s photos a pool)",
                     fold + 1, drawn.sum(), len(drawn), f"{most_pool:,}")  # fmt: skip
        train, pool, unseen = [], [], []
        for number, members in enumerate(members_of):
            if not drawn[number]:
                train += members.tolist()
            elif held_out[number]:
                pool += members.tolist()
                unseen += [True] * len(members)
            else:
                lend = lent_counts[number]
                if hold_out_landmarks:
                    lent = set(rng.permutation(members)[:lend].tolist())
                else:  # fold f lends the f-th share of one fixed shuffle: over the folds each photo queries in turn
                    order = np.random.default_rng([seed, 4243, number]).permutation(members)
                    lent = set(np.roll(order, -fold * lend)[:lend].tolist())
                pool += sorted(lent)
                unseen += [False] * len(lent)
                train += [i for i in members.tolist() if i not in lent]
        if pool:  # a fold with nothing held out validates nothing (landmarks too few, photos too few)
            result.append(
                Fold(np.array(train, dtype=np.int64), np.array(pool, dtype=np.int64), np.array(unseen, dtype=bool))
            )
    return result


def _lent_count(size: int, photo_share: float) -> int:
    """Photos a seen landmark of `size` lends a pool: max(2, its share), if it keeps two to train."""
    lend = max(2, int(round(photo_share * size)))
    return lend if size - lend >= 2 else 0


def _drawn(pool_sizes: np.ndarray, most: int, seed: list[int]) -> np.ndarray:
    """Which landmarks enter a pool: all while the pool holds at most `most` photos, else a seeded
    sample of them, in shuffled order while the pool stays within `most`."""
    if pool_sizes.sum() <= most:
        return np.ones(len(pool_sizes), bool)
    order = np.random.default_rng(seed).permutation(len(pool_sizes))
    drawn = np.zeros(len(pool_sizes), bool)
    drawn[order[: np.searchsorted(np.cumsum(pool_sizes[order]), most, side="right")]] = True
    return drawn
