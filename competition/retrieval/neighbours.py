"""Exact nearest neighbours among a set of rows: each row's best others by cosine, ties to the
lower index as a stable sort would give. Up to FAISS_FROM candidates in numpy, a block of
queries at a time (memory O(n k) plus one block x n, never n x n); from there with faiss.knn,
whose heap selects the top k several times faster than numpy's partition
(scripts/bench_neighbours.py), the tie rule kept; on a GPU by torch (retrieval/device_search.py).
Validation, label fusion and the re-ranking pools use them; retrieval/search.py is the faiss
search of a gallery."""

from __future__ import annotations

import faiss
import numpy as np

from competition.retrieval.device_search import DeviceExactIndex, cuda_device
from competition.retrieval.vectors import l2_normalize

NEIGHBOUR_BLOCK = 1024  # query rows a block at most: its similarities are block x n floats, never n x n
# similarities a block holds at most (256 MB of float32, and their int64 order): past 65k candidates the block
# shrinks, or a 1024-row block against 1.58M photos would hold 6.5 GB of scores and 13 GB of ranks
NEIGHBOUR_CELLS = 1 << 26
FAISS_FROM = 20_000  # candidates from which faiss.knn finds the neighbours (3x faster at 20k x 1280-d)
TIE_MARGIN = 8  # neighbours faiss finds beyond k: a row whose k-th score ties its least found one is ranked densely


def neighbours_among(
    embeddings: np.ndarray,
    k: int,
    rows: np.ndarray | None = None,
    block: int = NEIGHBOUR_BLOCK,
    normalize: bool = True,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (or each of `rows`') k most similar other rows by cosine, best first, exact:
    (similarities, indices), computed a block of queries at a time, so memory is O(n k) plus
    one block x n, however large n grows. Ties go to the lower index, as a stable sort of the
    dense matrix would give. `start`: only rows from there on are candidates (a gallery after
    its queries); `normalize=False`: by the rows' inner products as given."""
    x = l2_normalize(embeddings) if normalize else np.ascontiguousarray(embeddings, np.float32)
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
    candidates = x[start:]
    block = max(1, min(block, NEIGHBOUR_CELLS // max(1, len(candidates))))
    k = max(0, min(k, len(candidates) - int(bool((rows >= start).any()))))
    if len(candidates) >= FAISS_FROM and k:
        return _by_faiss(x, rows, k, start, block)
    similarities, indices = np.empty((len(rows), k), np.float32), np.empty((len(rows), k), np.int64)
    for first in range(0, len(rows), block):
        queries = rows[first : first + block]
        scores, top = _dense(x, queries, k, start)
        indices[first : first + len(queries)] = top + start
        similarities[first : first + len(queries)] = np.take_along_axis(scores, top, axis=1)
    return similarities, indices


def _dense(x: np.ndarray, queries: np.ndarray, k: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """(every candidate's score, the k best columns) of a block of queries, never the query itself."""
    scores = x[queries] @ x[start:].T
    inside = np.flatnonzero(queries >= start)
    scores[inside, queries[inside] - start] = -np.inf
    return scores, best_first(scores, k)


def _by_faiss(x: np.ndarray, rows: np.ndarray, k: int, start: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """neighbours_among by faiss.knn: TIE_MARGIN more than k (and the query itself) found, ordered
    by score then index; a row whose k-th score equals its least found one may have a tie beyond
    them, and is ranked densely instead, so ties still go to the lower index."""
    candidates = x[start:]
    fetch = min(len(candidates), k + 1 + TIE_MARGIN)
    scores, found = _best(x[rows], candidates, fetch)
    scores[found + start == rows[:, None]] = -np.inf  # never the query itself
    order = np.lexsort((found, -scores), axis=1)
    scores, found = np.take_along_axis(scores, order, axis=1), np.take_along_axis(found, order, axis=1)
    # the last found but one: the least found other when the query itself was among them (now last)
    unsure = np.flatnonzero(scores[:, k - 1] == scores[:, -2]) if fetch < len(candidates) else []
    for first in range(0, len(unsure), block):
        some = unsure[first : first + block]
        dense, top = _dense(x, rows[some], k, start)
        found[some, :k], scores[some, :k] = top, np.take_along_axis(dense, top, axis=1)
    return scores[:, :k], found[:, :k] + start


def _best(queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k best candidates by inner product, in any order among equal scores: faiss.knn,
    or torch on a GPU (validation's pools of 100k photos at 1280-d: minutes on 2 CPU cores)."""
    if (gpu := cuda_device(*candidates.shape)) is None:
        return faiss.knn(queries, candidates, k, metric=faiss.METRIC_INNER_PRODUCT)
    index = DeviceExactIndex(candidates.shape[1], len(candidates), gpu)
    index.add(candidates)
    return index.search(queries, k)


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's k highest columns, best first, equal scores by lower column: what a stable argsort
    of -scores gives, without sorting whole rows. A row whose k-th score ties one left outside the
    partition's k is sorted whole (rare: so its ties go to the lower column too)."""
    k = max(0, min(k, scores.shape[1]))
    if k == 0 or k == scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    kth = top_scores.min(axis=1, keepdims=True)
    straddled = np.flatnonzero((scores == kth).sum(axis=1) > (top_scores == kth).sum(axis=1))
    order = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    if len(straddled):
        top[straddled] = np.argsort(-scores[straddled], axis=1, kind="stable")[:, :k]
    return top


def leave_one_out_ranking(embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """Each row queries all the others (itself excluded): validation without a separate gallery."""
    return neighbours_among(embeddings, k)[1]
