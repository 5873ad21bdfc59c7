"""Validation that predicts the test: folds of whole landmarks held out, queried together.

Each fold holds out a share of the training landmarks whole (stand-ins for landmarks the
model will meet only at test time) and a few photos of every other landmark (new photos
of seen landmarks). The held-out photos form one pool in which every photo queries all
the others, as a test query meets seen and unseen landmarks in one gallery. Augmented
copies never enter a pool and no photo of a held-out landmark trains. Over the folds
every landmark is unseen once, so a few hundred photos give a few hundred queries.

Each query's top-10 among the others is found exactly, a block of queries at a time
(`neighbours_among`), never as the pool's n x n matrix; past MOST_QUERIES a pool is judged
by a seeded sample of its queries, each still ranking the whole pool (the summary's
`queries` says how many). Past POOL_MOST photos a pool draws a seeded sample of its
landmarks (`pool_photos` in the run's config), so Google Landmarks' 1.58 M photos validate on
pools of 100k photos: a fixed cost, in O(n) memory.

The trained and the pretrained embeddings are scored on the same queries, and their
difference gets a bootstrap interval over queries. The organisers' unlabeled gallery is
not used as distractors: it holds photos of the very landmarks the pool queries come
from, and a correct match there would count as a miss.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from competition.evaluate.metrics import GROUPS, average_precision, bootstrap_interval, relevance
from competition.retrieval.search import neighbours_among
from competition.runs import TOO_FEW
from competition.train.sampling import class_members

log = logging.getLogger(__name__)

HELD_OUT = GROUPS[1:]  # validation judges the seen and unseen groups apart, never "all"
MAP_K = 10
MIN_QUERIES = 20  # fewer validation queries than this in a group: too few to tell
# Above this many, a pool's queries are a seeded sample (each against the whole pool): 20k
# queries bound a paired interval of mAP@10 to about a point, and keep a 1.5M-photo pool's
# validation at 20k x 1.5M similarities, in blocks
MOST_QUERIES = 20_000
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


@dataclass
class PoolScores:
    """Per-query results of leave-one-out retrieval in validation pools."""

    top1: np.ndarray
    ap: np.ndarray  # AP@MAP_K
    unseen: np.ndarray

    @staticmethod
    def concat(parts: Sequence["PoolScores"]) -> "PoolScores":
        if not parts:  # no fold held anything out: no queries, so "too few photos to tell"
            return PoolScores(np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
        return PoolScores(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("top1", "ap", "unseen")))

    def group(self, name: str) -> np.ndarray:
        return self.unseen if name == "unseen" else ~self.unseen

    def means(self) -> dict[str, float]:
        """{'seen_top1', 'seen_map@10', 'unseen_top1', ...} for groups that have queries."""
        scores = {}
        for name in HELD_OUT:
            mask = self.group(name)
            if mask.any():
                scores[f"{name}_top1"] = float(self.top1[mask].mean())
                scores[f"{name}_map@{MAP_K}"] = float(self.ap[mask].mean())
        return scores


def pool_queries(labels: Sequence[str], most: int | None = None, seed: int = 0) -> np.ndarray:
    """The pool photos that query: those whose landmark has another photo in the pool, at most
    `most` of them (a seeded sample, in pool order) so a pool of a million photos is judged by a
    fixed number of queries against all of it, never a million squared."""
    most = MOST_QUERIES if most is None else most
    counts = Counter(np.asarray(labels).tolist())
    queries = np.flatnonzero([counts[label] > 1 for label in labels])
    if len(queries) > most:
        queries = np.sort(np.random.default_rng([seed, 77]).choice(queries, most, replace=False))
    return queries


def score_pool(vectors: np.ndarray, labels: Sequence[str], unseen: np.ndarray) -> PoolScores:
    """Every query of `pool_queries` ranks all the other pool photos: exact top-k in blocks."""
    queries = pool_queries(labels)
    return score_ranked(neighbours_among(vectors, MAP_K, queries)[1], queries, labels, unseen)


def score_ranked(ranking: np.ndarray, queries: np.ndarray, labels: Sequence[str], unseen: np.ndarray) -> PoolScores:
    """Top-1 and AP@MAP_K of the pool photos `queries`, each ranking the others as `ranking`'s row."""
    labels = np.asarray(labels)
    if len(queries) == 0:
        return PoolScores(np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
    counts = Counter(labels.tolist())
    hits = relevance(ranking[:, :MAP_K], labels[queries], labels)
    relevant = np.array([counts[label] - 1 for label in labels[queries]])
    return PoolScores(hits[:, 0], average_precision(hits, MAP_K, relevant), np.asarray(unseen, bool)[queries])


def objective(scores: dict[str, float]) -> float:
    """What epochs and settings are chosen by: mAP@10 averaged over the seen and unseen groups."""
    values = [scores[f"{g}_map@{MAP_K}"] for g in HELD_OUT if f"{g}_map@{MAP_K}" in scores]
    return float(np.mean(values)) if values else float("-inf")


def map_scores(scores: dict[str, float]) -> str:
    """An epoch's mAP scores as a log line shows them: `seen_map@10 0.512  unseen_map@10 0.430`."""
    return "  ".join(f"{key} {value:.3f}" for key, value in scores.items() if "map" in key)


def compare(trained: PoolScores, pretrained: PoolScores, seed: int = 0) -> dict[str, dict]:
    """Per group: both scores, the paired 90% interval of the difference, and a verdict.

    The verdict reads the mAP@10 interval: 'better' when it lies above 0, 'worse' below,
    'no clear difference' across it; with fewer than MIN_QUERIES queries, 'too few photos
    to tell'. `beats` is the sign of the measured difference, None when too few."""
    result = {}
    for name in HELD_OUT:
        mask = trained.group(name)
        queries = int(mask.sum())
        if not queries:
            result[name] = {"queries": 0, "verdict": TOO_FEW, "beats": None}
            continue
        difference = {}
        for metric, attribute in (("top1", "top1"), (f"map@{MAP_K}", "ap")):
            delta = getattr(trained, attribute)[mask].astype(float) - getattr(pretrained, attribute)[mask]
            difference[metric] = [float(delta.mean()), *bootstrap_interval(delta, seed=seed)]
        mean, low, high = difference[f"map@{MAP_K}"]
        if queries < MIN_QUERIES:
            verdict = TOO_FEW
        else:
            verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
        result[name] = {
            "queries": queries,
            "pretrained": {
                "top1": float(pretrained.top1[mask].mean()),
                f"map@{MAP_K}": float(pretrained.ap[mask].mean()),
            },
            "trained": {"top1": float(trained.top1[mask].mean()), f"map@{MAP_K}": float(trained.ap[mask].mean())},
            "difference": difference,
            "verdict": verdict,
            "beats": None if queries < MIN_QUERIES else mean > 0,
        }
    return result
