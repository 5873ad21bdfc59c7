"""Validation that predicts the test: the held-out photos of a fold (train/folds.py: whole
landmarks held out, and a few photos of every other) form one pool in which every photo
queries all the others, as a test query meets seen and unseen landmarks in one gallery. Over
the folds every landmark is unseen once, so a few hundred photos give a few hundred queries.

Each query's top-10 among the others is found exactly, a block of queries at a time
(`neighbours_among`), never as the pool's n x n matrix; past MOST_QUERIES a pool is judged
by a seeded sample of its queries, each still ranking the whole pool (the summary's
`queries` says how many); past folds.POOL_MOST photos a pool draws a sample of its landmarks
(`pool_photos` in the run's config), so Google Landmarks' 1.58 M photos validate on pools of
100k photos: a fixed cost, in O(n) memory.

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
from competition.retrieval.neighbours import neighbours_among
from competition.runs import Verdict

log = logging.getLogger(__name__)

HELD_OUT = GROUPS[1:]  # validation judges the seen and unseen groups apart, never "all"
MAP_K = 10
MIN_QUERIES = 20  # fewer validation queries than this in a group: too few to tell
# Above this many, a pool's queries are a seeded sample (each against the whole pool): 20k
# queries bound a paired interval of mAP@10 to about a point, and keep a 1.5M-photo pool's
# validation at 20k x 1.5M similarities, in blocks
MOST_QUERIES = 20_000


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
            result[name] = {"queries": 0, "verdict": Verdict.TOO_FEW, "beats": None}
            continue
        difference = {}
        for metric, attribute in (("top1", "top1"), (f"map@{MAP_K}", "ap")):
            delta = getattr(trained, attribute)[mask].astype(float) - getattr(pretrained, attribute)[mask]
            difference[metric] = [float(delta.mean()), *bootstrap_interval(delta, seed=seed)]
        mean, low, high = difference[f"map@{MAP_K}"]
        if queries < MIN_QUERIES:
            verdict = Verdict.TOO_FEW
        else:
            verdict = Verdict.BETTER if low > 0 else Verdict.WORSE if high < 0 else Verdict.UNCLEAR
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
