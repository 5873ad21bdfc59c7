"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on a nearest-neighbour graph, sparse.

Two photos that are each other's k1 nearest are k-reciprocal neighbours; a photo's set grows by
the sets of its members that mostly lie inside it (at k1 / 2), each member weighted by
exp(-distance), and is averaged over the photo's k2 nearest. The re-ranked distance is
(1 - lambda) * the Jaccard distance of two photos' weighted sets + lambda * their own distance,
both distances divided by the photo's largest, as the authors' code does.

Everything here is what the dense textbook version computes, from each photo's k1 nearest
(rerank/graph.py) instead of its full row: the sets are sparse rows, and a query's Jaccard
distance is computed only for gallery photos that share a member with it; every other photo
has Jaccard distance 1 and so ranks by its own distance, which is why each query's nearest by
cosine join the candidates. Memory O(n * k1^2), so it runs on galleries of any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import sparse

from competition.retrieval.rerank.graph import Neighbours

BLOCK = 65_536  # photos whose neighbour sets are worked out at once (bounds the block x k1 x k1 arrays)


def _ranks(graph: Neighbours, width: int) -> np.ndarray:
    """Each photo first, then its nearest: the first `width` columns of the dense version's argsort."""
    return np.concatenate([np.arange(len(graph.indices))[:, None], graph.indices[:, : width - 1]], axis=1)


def _reciprocal(ranks: np.ndarray, k: int) -> np.ndarray:
    """Each photo's k-reciprocal neighbours (itself included) as its first k + 1 ranks, -1 where
    the neighbour does not count the photo among its own first k + 1."""
    forward = ranks[:, : k + 1]
    kept = np.empty_like(forward)
    for start in range(0, len(ranks), BLOCK):
        rows = forward[start : start + BLOCK]
        backward = ranks[rows, : k + 1]  # (block, k + 1, k + 1)
        mutual = (backward == np.arange(start, start + len(rows))[:, None, None]).any(axis=2)
        kept[start : start + BLOCK] = np.where(mutual, rows, -1)
    return kept


def _expanded_sets(ranks: np.ndarray, k1: int) -> sparse.csr_matrix:
    """Each photo's k-reciprocal set, joined by each member's k1/2 set that lies over two thirds
    inside it: a 0/1 (n, n) matrix."""
    own, half = _reciprocal(ranks, k1), _reciprocal(ranks, int(np.around(k1 / 2)))
    rows, columns = [], []
    for start in range(0, len(ranks), BLOCK):
        members = own[start : start + BLOCK]
        theirs = np.where(members[:, :, None] >= 0, half[np.maximum(members, 0)], -1)  # (block, k1+1, half+1)
        inside = ((theirs[..., None] == members[:, None, None, :]) & (theirs[..., None] >= 0)).any(axis=3)
        joins = inside.sum(axis=2) > 2 / 3 * (theirs >= 0).sum(axis=2)
        added = np.where(joins[..., None], theirs, -1).reshape(len(members), -1)
        every = np.concatenate([members, added], axis=1)
        photo = np.broadcast_to(np.arange(start, start + len(members))[:, None], every.shape)
        rows.append(photo[every >= 0])
        columns.append(every[every >= 0])
    n = len(ranks)
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    sets = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(n, n))
    sets.data[:] = 1.0  # a member found twice is one member
    return sets


def _distances(rows: np.ndarray, photos: np.ndarray, others: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of each pair of unit rows, divided by the first one's largest."""
    similarity = np.einsum("nd,nd->n", rows[photos], rows[others])
    return np.clip(2 - 2 * similarity, 0, None) / largest[photos]


def _weights(rows: np.ndarray, graph: Neighbours, k1: int, k2: int, largest: np.ndarray) -> sparse.csr_matrix:
    """Each photo's set as weights exp(-distance), summing to 1, averaged over its k2 nearest."""
    ranks = _ranks(graph, max(k1 + 1, k2))
    sets = _expanded_sets(ranks, k1)
    photo = np.repeat(np.arange(sets.shape[0]), np.diff(sets.indptr))
    for start in range(0, len(photo), BLOCK * 8):
        part = slice(start, start + BLOCK * 8)
        sets.data[part] = np.exp(-_distances(rows, photo[part], sets.indices[part], largest))
    sets = sparse.diags(1 / np.asarray(sets.sum(axis=1)).ravel()) @ sets
    if k2 > 1:  # local query expansion in the space of neighbour sets
        n = sets.shape[0]
        averaging = sparse.csr_matrix(
            (np.full(n * k2, 1 / k2), (np.repeat(np.arange(n), k2), ranks[:, :k2].ravel())), shape=(n, n)
        )
        sets = averaging @ sets
    return sets.tocsr()


def _overlaps(weights: sparse.csr_matrix, by_member: sparse.csc_matrix, photo: int) -> tuple[np.ndarray, np.ndarray]:
    """The photos whose weighted sets share a member with `photo`'s, and for each the sum over
    shared members of the smaller weight (the Jaccard numerator), read column by column."""
    members = weights.indices[weights.indptr[photo] : weights.indptr[photo + 1]]
    mine = weights.data[weights.indptr[photo] : weights.indptr[photo + 1]]
    starts, ends = by_member.indptr[members], by_member.indptr[members + 1]
    at = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(members) else np.zeros(0, int)
    sharing, position = np.unique(by_member.indices[at], return_inverse=True)
    return sharing, np.bincount(position, np.minimum(by_member.data[at], np.repeat(mine, ends - starts)), len(sharing))


def k_reciprocal(
    rows: np.ndarray,
    graph: Neighbours,
    sources: np.ndarray,
    candidates: np.ndarray,
    k: int,
    k1: int = 8,
    k2: int = 3,
    lambda_value: float = 0.3,
    gallery_from: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ranking) of each source's top k photos from `gallery_from` on (never the source),
    by minus the re-ranked distance. rows: the photos (unit rows, or any whose inner products are
    the similarity); graph: their nearest (at least max(k1, k2 - 1) wide); candidates: each
    source's nearest by similarity among the photos it may rank (at least k of them)."""
    n = len(rows)
    k1, k2 = min(k1, n - 1), min(k2, n - 1)
    largest = np.maximum(np.clip(2 - 2 * graph.lowest, 0, None), 1e-12)
    weights = _weights(rows, graph, k1, k2, largest)
    by_member = weights.tocsc()
    k = min(k, candidates.shape[1])
    scores, ranking = np.empty((len(sources), k), np.float32), np.empty((len(sources), k), np.int64)
    for i, source in enumerate(sources):
        sharing, shared = _overlaps(weights, by_member, source)
        others = np.union1d(sharing[(sharing >= gallery_from) & (sharing != source)], candidates[i])
        overlap = np.zeros(len(others))
        found = np.isin(sharing, others)
        overlap[np.searchsorted(others, sharing[found])] = shared[found]
        jaccard = 1 - overlap / (2 - overlap)
        own = _distances(rows, np.full(len(others), source), others, largest)
        distance = jaccard * (1 - lambda_value) + own * lambda_value
        order = np.lexsort((others, distance))[:k]
        scores[i], ranking[i] = -distance[order], others[order] - gallery_from
    return scores, ranking


@dataclass(frozen=True)
class KReciprocal:
    """k-reciprocal re-ranking as `--re-ranking k-reciprocal` runs it; its settings are PostProcess's
    rerank_k1 and rerank_k2."""

    name: ClassVar[str] = "k-reciprocal"
    SETTINGS: ClassVar[str] = "rerank_"
    k1: int = 8
    k2: int = 3

    @property
    def width(self) -> int:
        """The neighbours it reads per photo."""
        return max(self.k1, self.k2 - 1)

    def depth(self, k: int) -> int:
        """The candidates a query needs to rank its top k."""
        return k

    def held_per_photo(self) -> int:
        """Bytes its weighted neighbour sets hold per photo: at most k2 x (k1 + 1) x (k1 / 2 + 2)
        members, 12 bytes each, twice (by row and by member)."""
        return 24 * self.k2 * (self.k1 + 1) * (round(self.k1 / 2) + 2)

    def run(self, rows, graph, sources, candidates, k: int, gallery_from: int) -> tuple[np.ndarray, np.ndarray]:
        return k_reciprocal(rows, graph, sources, candidates, k, self.k1, self.k2, gallery_from=gallery_from)

    def describe(self) -> str:
        return f"k-reciprocal k1={self.k1} k2={self.k2}"
