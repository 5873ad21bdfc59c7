"""Post-processing of retrieval embeddings and rankings, each a small pure function.

The standard landmark-retrieval toolbox (Radenović et al., "Fine-tuning CNN image
retrieval with no human annotation", and the Google Landmark challenge solutions):
- PCA-whitening learned on unlabeled images (the gallery by default);
- alpha-query expansion (alpha-QE): a query becomes the weighted mean of itself and its
  top-k gallery neighbours, weights = similarity ** alpha;
- database-side augmentation (DBA): the same for every gallery image among the gallery;
- k-reciprocal re-ranking (Zhong et al. 2017): images that are each other's neighbours
  get closer, via Jaccard distance of k-reciprocal neighbour sets.
All take and return L2-normalised float32 arrays (rows = images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from competition.errors import CompeteError
from competition.retrieval.search import l2_normalize, search


@dataclass
class Whitening:
    """PCA-whitening: centre, rotate onto principal axes, divide each by eigenvalue**(shrinkage/2).

    shrinkage 1 is full whitening; below 1 it amplifies the weak (noisier) directions less,
    which helps when it was learned on few images."""

    pca: PCA
    shrinkage: float = 1.0

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        projected = self.pca.transform(l2_normalize(vectors))
        scale = np.power(np.maximum(self.pca.explained_variance_, 1e-12), -self.shrinkage / 2)
        return l2_normalize(projected * scale)


WHITEN_SAMPLE = 100_000  # PCA-whitening is fitted on at most this many vectors (a seeded sample)
NEIGHBOUR_BATCH = 65_536  # rows whose neighbours are averaged at once (bounds the n*k*d gather)
RERANK_MAX = 20_000  # query + gallery images k-reciprocal re-ranking accepts: it holds (Q+G)^2 distances


def learn_whitening(fit_on: np.ndarray, dim: int = 0, shrinkage: float = 1.0) -> Whitening:
    """Learn on unlabeled vectors (a sample of WHITEN_SAMPLE past that); `dim` 0 keeps as many
    components as the data allow."""
    if len(fit_on) > WHITEN_SAMPLE:
        fit_on = fit_on[np.sort(np.random.default_rng(0).choice(len(fit_on), WHITEN_SAMPLE, replace=False))]
    components = min(dim or fit_on.shape[1], fit_on.shape[0] - 1, fit_on.shape[1])
    return Whitening(PCA(n_components=components, random_state=0).fit(l2_normalize(fit_on)), shrinkage)


def _neighbour_mean(
    vectors: np.ndarray, database: np.ndarray, k: int, alpha: float, include_self: bool = False, index: str = "exact"
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
    queries: np.ndarray, gallery: np.ndarray, k: int = 2, alpha: float = 3.0, index: str = "exact"
) -> np.ndarray:
    """alpha-QE: each query plus its top-k gallery neighbours weighted by similarity**alpha."""
    return _neighbour_mean(l2_normalize(queries), l2_normalize(gallery), k, alpha, index=index)


def database_augmentation(gallery: np.ndarray, k: int = 2, alpha: float = 3.0, index: str = "exact") -> np.ndarray:
    """DBA: each gallery image replaced by the weighted mean of its top-k gallery neighbours,
    itself included (similarity 1, weight 1)."""
    gallery = l2_normalize(gallery)
    return _neighbour_mean(gallery, gallery, k, alpha, include_self=True, index=index)


def k_reciprocal_distance(
    queries: np.ndarray, gallery: np.ndarray, k1: int = 8, k2: int = 3, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-ranked (num_queries, num_gallery) distances, smaller = more similar.

    Follows Zhong et al. (CVPR 2017) on the joint query+gallery set; memory is O((Q+G)^2),
    fine up to tens of thousands of images."""
    queries, gallery = l2_normalize(queries), l2_normalize(gallery)
    features = np.concatenate([queries, gallery])
    num_queries, total = len(queries), len(features)
    k1, k2 = min(k1, total - 1), min(k2, total - 1)
    original = np.clip(2 - 2 * features @ features.T, 0, None)  # squared euclidean of unit vectors
    original = original / np.maximum(original.max(axis=1, keepdims=True), 1e-12)
    ranks = np.argsort(original, axis=1, kind="stable")
    expansion_weights = np.zeros_like(original)
    for i in range(total):
        reciprocal = _k_reciprocal(ranks, i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = _k_reciprocal(ranks, candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(candidate_set, reciprocal)) > 2 / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        expansion_weights[i, expansion] = weight / weight.sum()
    if k2 > 1:  # local query expansion in the neighbour-set space
        expansion_weights = np.stack([expansion_weights[ranks[i, :k2]].mean(axis=0) for i in range(total)])
    jaccard = np.zeros((num_queries, total))
    for i in range(num_queries):
        shared = np.minimum(expansion_weights[i][None, :], expansion_weights).sum(axis=1)
        jaccard[i] = 1 - shared / (2 - shared)
    final = jaccard * (1 - lambda_value) + original[:num_queries] * lambda_value
    return final[:, num_queries:]


def _k_reciprocal(ranks: np.ndarray, index: int, k: int) -> np.ndarray:
    forward = ranks[index, : k + 1]
    backward = ranks[forward, : k + 1]
    return forward[np.any(backward == index, axis=1)]


WHITEN_ON = ("off", "gallery", "query+gallery")


@dataclass
class PostProcess:
    """Which steps to run, in the order they run; `describe()` is what the leaderboard shows."""

    whiten: str = "off"  # off, gallery or query+gallery: the unlabeled images it is learned on
    whiten_dim: int = 0
    # 0.5 (square-root whitening): full whitening learned on a few hundred images blows up
    # noise directions; measured on the embedded set, 1.0 halved top-1 and 0.5 added 5 points.
    whiten_power: float = 0.5
    dba: int = 0  # neighbours for database-side augmentation (0 = off)
    qe: int = 0  # neighbours for alpha-query expansion (0 = off)
    alpha: float = 3.0
    rerank: bool = False  # k-reciprocal re-ranking of the final ranking
    # k1 about 1.5x the photos one landmark has in query + gallery: realdev has ~6 (494 photos, 81
    # landmarks), where k1=8 k2=3 lifted the ensemble's mAP@10 0.654 -> 0.756 and k1=20 lost.
    rerank_k1: int = 8
    rerank_k2: int = 3

    def check(self) -> None:
        """One line for the first setting out of range, before any work."""
        if self.whiten not in WHITEN_ON:
            raise CompeteError(f"--whiten must be one of {', '.join(WHITEN_ON)}, not '{self.whiten}'")
        for name, value, low in (
            ("whiten-dim", self.whiten_dim, 0),
            ("dba", self.dba, 0),
            ("qe", self.qe, 0),
            ("alpha", self.alpha, 0),
            ("rerank-k1", self.rerank_k1, 1),
            ("rerank-k2", self.rerank_k2, 1),
        ):
            if not np.isfinite(value) or value < low:
                raise CompeteError(f"--{name} must be >= {low}, not {value}")
        if not np.isfinite(self.whiten_power) or self.whiten_power <= 0:
            raise CompeteError(f"--whiten-power must be > 0, not {self.whiten_power}")

    def check_size(self, images: int) -> None:
        """Re-ranking is dense: refuse it, before any work, past RERANK_MAX query + gallery images."""
        if self.rerank and images > RERANK_MAX:
            raise CompeteError(
                f"k-reciprocal re-ranking holds (query + gallery)^2 distances: {images:,} images would need "
                f"~{images**2 * 8 / 1e9:.0f} GB, so it stops at {RERANK_MAX:,}; use --qe / --dba, which find "
                "neighbours with faiss"
            )

    def describe(self) -> str:
        steps = []
        if self.whiten != "off":
            steps.append(
                f"PCA-whiten({self.whiten}{f', {self.whiten_dim}-d' if self.whiten_dim else ''}"
                f", power {self.whiten_power:g})"
            )
        if self.dba:
            steps.append(f"DBA k={self.dba}")
        if self.qe:
            steps.append(f"α-QE k={self.qe} α={self.alpha:g}")
        if self.rerank:
            steps.append(f"k-reciprocal k1={self.rerank_k1} k2={self.rerank_k2}")
        return ", ".join(steps) or "none"

    def vectors(self, queries: np.ndarray, gallery: np.ndarray, index: str = "exact") -> tuple[np.ndarray, np.ndarray]:
        """The embedding steps (whitening, DBA, QE): the vectors the ranking is made from; their
        neighbours come from the same kind of faiss `index` as the final search."""
        self.check()
        if self.whiten != "off":
            fit_on = gallery if self.whiten == "gallery" else np.concatenate([queries, gallery])
            whitening = learn_whitening(fit_on, self.whiten_dim, self.whiten_power)
            queries, gallery = whitening(queries), whitening(gallery)
        if self.dba:
            gallery = database_augmentation(gallery, self.dba, self.alpha, index)
        if self.qe:
            queries = query_expansion(queries, gallery, self.qe, self.alpha, index)
        return l2_normalize(queries), l2_normalize(gallery)

    def rank(self, queries: np.ndarray, gallery: np.ndarray, k: int, index: str = "exact") -> np.ndarray:
        """Top-k gallery indices per query after every step (`index`: see search.build_index)."""
        return self.rank_vectors(*self.vectors(queries, gallery, index), k, index)

    def rank_vectors(self, queries: np.ndarray, gallery: np.ndarray, k: int, index: str = "exact") -> np.ndarray:
        """Top-k from vectors that already went through `vectors`: search, then re-ranking if asked."""
        return self.scored_ranking(queries, gallery, k, index)[1]

    def scored_ranking(
        self, queries: np.ndarray, gallery: np.ndarray, k: int, index: str = "exact"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ranking) of the top-k, larger = better: the similarity, or minus the
        re-ranked distance when k-reciprocal re-ranking is on."""
        if self.rerank:
            self.check_size(len(queries) + len(gallery))
            distances = k_reciprocal_distance(queries, gallery, self.rerank_k1, self.rerank_k2)
            ranking = np.argsort(distances, axis=1, kind="stable")[:, : min(k, len(gallery))]
            return -np.take_along_axis(distances, ranking, axis=1), ranking
        return search(queries, gallery, k, index=index)
