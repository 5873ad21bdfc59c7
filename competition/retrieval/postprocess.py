"""Post-processing of retrieval embeddings and rankings, each a small pure function.

The standard landmark-retrieval toolbox (Radenović et al., "Fine-tuning CNN image
retrieval with no human annotation", and the Google Landmark challenge solutions):
- PCA-whitening learned on unlabeled images (the gallery by default; not training's learned
  whitening, which uses labels);
- alpha-query expansion (alpha-QE): a query becomes the weighted mean of itself and its
  top-k gallery neighbours, weights = similarity ** alpha;
- database-side augmentation (DBA): the same for every gallery image among the gallery;
- a re-ranking of the final ranking (retrieval/rerank/: k-reciprocal, diffusion), on one sparse
  graph of query and gallery photos, the gallery's part cached.
All take and return L2-normalised float32 arrays (rows = images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA

from competition.errors import CompeteError
from competition.retrieval.neighbours import best_first
from competition.retrieval.posteriors import FUSION_CANDIDATES, LOGISTIC_MOST_CLASSES, posterior_agreement, rescore
from competition.retrieval.rerank import re_ranking_of
from competition.retrieval.rerank.graph import joint_graph, nearest
from competition.retrieval.rerank.memory import check_size
from competition.retrieval.search import Searcher, search
from competition.retrieval.vectors import l2_normalize
from competition.settings.submit import PostProcess


@dataclass
class PcaWhitening:
    """PCA-whitening, unsupervised (submit --pca-whiten): centre, rotate onto principal axes, divide
    each by eigenvalue**(power/2). Not the learned whitening of training, which is fitted on
    labels (train/whitening.py).

    power 1 is full whitening; below 1 it amplifies the weak (noisier) directions less, which
    helps when it was learned on few images."""

    pca: PCA
    power: float = 1.0

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        projected = self.pca.transform(l2_normalize(vectors))
        scale = np.power(np.maximum(self.pca.explained_variance_, 1e-12), -self.power / 2)
        return l2_normalize(projected * scale)


WHITEN_SAMPLE = 100_000  # PCA-whitening is fitted on at most this many vectors (a seeded sample)
NEIGHBOUR_BATCH = 65_536  # rows whose neighbours are averaged at once (bounds the n*k*d gather)
Fusion = tuple[np.ndarray, np.ndarray]  # rows whose inner products are the fusion term (retrieval/posteriors.py)
POOL_MAX = 20_000  # validation pools post-processings are judged on: α-QE and DBA rank a pool densely


def learn_pca_whitening(fit_on: np.ndarray, dim: int = 0, power: float = 1.0) -> PcaWhitening:
    """Learn on unlabeled vectors (a sample of WHITEN_SAMPLE past that); `dim` 0 keeps as many
    components as the data allow."""
    if len(fit_on) > WHITEN_SAMPLE:
        fit_on = fit_on[np.sort(np.random.default_rng(0).choice(len(fit_on), WHITEN_SAMPLE, replace=False))]
    components = min(dim or fit_on.shape[1], fit_on.shape[0] - 1, fit_on.shape[1])
    return PcaWhitening(PCA(n_components=components, random_state=0).fit(l2_normalize(fit_on)), power)


def _neighbour_mean(
    vectors: np.ndarray,
    database: np.ndarray,
    k: int,
    alpha: float,
    include_self: bool = False,
    index: str | Searcher = "exact",
) -> np.ndarray:
    """Each row plus its top-k database neighbours (found by faiss, never a full similarity
    matrix), weighted by similarity ** alpha."""
    similarity, order = search(vectors, database, k, index=index)
    weights = np.power(np.clip(similarity, 0, None), alpha).astype(np.float32)
    expanded = np.empty_like(vectors)
    for start in range(0, len(vectors), NEIGHBOUR_BATCH):
        rows = slice(start, start + NEIGHBOUR_BATCH)
        expanded[rows] = np.einsum("nk,nkd->nd", weights[rows], database[order[rows]])
    if not include_self:
        expanded = expanded + vectors  # the query itself, weight 1
    return l2_normalize(expanded)


def query_expansion(
    queries: np.ndarray, gallery: np.ndarray, k: int = 2, alpha: float = 3.0, index: str | Searcher = "exact"
) -> np.ndarray:
    """alpha-QE: each query plus its top-k gallery neighbours weighted by similarity**alpha."""
    return _neighbour_mean(l2_normalize(queries), l2_normalize(gallery), k, alpha, index=index)


def database_augmentation(
    gallery: np.ndarray, k: int = 2, alpha: float = 3.0, index: str | Searcher = "exact"
) -> np.ndarray:
    """DBA: each gallery image replaced by the weighted mean of its top-k gallery neighbours,
    itself included (similarity 1, weight 1)."""
    gallery = l2_normalize(gallery)
    return _neighbour_mean(gallery, gallery, k, alpha, include_self=True, index=index)


def joint_rows(queries: np.ndarray, gallery: np.ndarray, fusion: Fusion | None = None) -> np.ndarray:
    """Query and gallery photos as one set of rows whose inner products are their similarity:
    the cosine, or with `fusion` the fused score (retrieval/posteriors.py) scaled back to at most 1."""
    rows = l2_normalize(np.concatenate([queries, gallery]))
    if fusion is None:
        return rows
    if any(sparse.issparse(part) for part in fusion):
        raise CompeteError(
            "re-ranking with label fusion keeps each photo's posteriors beside its embedding, which "
            f"over {LOGISTIC_MOST_CLASSES:,} landmarks are kept sparse: use --qe / --dba, or --landmarks new"
        )
    fused = np.concatenate(fusion)
    return np.concatenate([rows, fused], axis=1) / np.sqrt(1 + float((fused**2).sum(axis=1).max()))


def describe(steps: PostProcess) -> str:
    """The steps as the leaderboard and a run's summary show them ("none" for none)."""
    re_ranking = re_ranking_of(steps)
    return ", ".join(steps.embedding_described() + ([re_ranking.describe()] if re_ranking else [])) or "none"


def embedding_steps(
    steps: PostProcess, queries: np.ndarray, gallery: np.ndarray, index: str | Searcher = "exact"
) -> tuple[np.ndarray, np.ndarray]:
    """The embedding steps (PCA-whitening, DBA, QE): the vectors the ranking is made from; their
    neighbours come from the same kind of faiss `index` as the final search."""
    if steps.pca_whiten != "off":
        fit_on = gallery if steps.pca_whiten == "gallery" else np.concatenate([queries, gallery])
        whitening = learn_pca_whitening(fit_on, steps.pca_whiten_dim, steps.pca_whiten_power)
        queries, gallery = whitening(queries), whitening(gallery)
    if steps.dba:
        gallery = database_augmentation(gallery, steps.dba, steps.alpha, index)
    if steps.qe:
        queries = query_expansion(queries, gallery, steps.qe, steps.alpha, index)
    return l2_normalize(queries), l2_normalize(gallery)


def scored_ranking(
    steps: PostProcess,
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    index: str | Searcher = "exact",
    fusion: Fusion | None = None,
    graph_cache: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ranking) of the top-k from vectors that went through `embedding_steps`, larger =
    better: the similarity, or the re-ranking's score (retrieval/rerank/) on the joint graph (the
    gallery's part kept in `graph_cache`). `fusion` (query rows, gallery rows): label fusion, re-ordering each query's
    FUSION_CANDIDATES best by cosine (or, re-ranked, inside the joint similarity)."""
    check_size(steps, len(queries), len(gallery))
    if re_ranking := re_ranking_of(steps):
        rows, count = joint_rows(queries, gallery, fusion), len(queries)
        kind, nprobe = (index.kind, index.nprobe) if isinstance(index, Searcher) else (index, 0)
        graph, candidates = joint_graph(
            rows[:count], rows[count:], re_ranking.width, re_ranking.depth(k), kind, graph_cache, nprobe
        )
        return re_ranking.run(rows, graph, np.arange(count), candidates, k, gallery_from=count)
    if fusion is None:
        return search(queries, gallery, k, index=index)
    scores, candidates = search(queries, gallery, max(k, FUSION_CANDIDATES), index=index)
    return rescore(scores, candidates, posterior_agreement(fusion[0], fusion[1], candidates), k)


def rank(
    steps: PostProcess, queries: np.ndarray, gallery: np.ndarray, k: int, index: str | Searcher = "exact"
) -> np.ndarray:
    """Top-k gallery indices per query after every step (`index`: see search.build_index)."""
    index = index if isinstance(index, Searcher) else Searcher(index, k)
    return scored_ranking(steps, *embedding_steps(steps, queries, gallery, index), k, index)[1]


def pool_ranking(steps: PostProcess, vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Each pool photo in `queries` ranks all the others after the DBA, α-QE or re-ranking of
    `steps`, the pool being its own gallery (validation; DBA and α-QE dense, so pools up to POOL_MAX)."""
    x = l2_normalize(vectors)
    if re_ranking := re_ranking_of(steps):
        depth = re_ranking.depth(k)
        graph = nearest(x, x, max(re_ranking.width, depth), same=True)
        return re_ranking.run(x, graph, queries, graph.indices[queries, :depth], k, gallery_from=0)[1]
    gallery = database_augmentation(x, steps.dba, steps.alpha) if steps.dba else x
    expanded = x[queries]
    if steps.qe:  # the query's nearest others, never itself
        similarity = expanded @ gallery.T
        similarity[np.arange(len(queries)), queries] = -np.inf
        nearest_others = best_first(similarity, steps.qe)
        weights = np.power(np.clip(np.take_along_axis(similarity, nearest_others, axis=1), 0, None), steps.alpha)
        expanded = l2_normalize(expanded + np.einsum("nk,nkd->nd", weights, gallery[nearest_others]))
    similarity = expanded @ gallery.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    return best_first(similarity, k)
