"""Post-processing of retrieval embeddings and rankings, each a small pure function.

The standard landmark-retrieval toolbox (Radenović et al., "Fine-tuning CNN image
retrieval with no human annotation", and the Google Landmark challenge solutions):
- PCA-whitening learned on unlabeled images (the gallery by default; not training's learned
  whitening, which uses labels);
- alpha-query expansion (alpha-QE): a query becomes the weighted mean of itself and its
  top-k gallery neighbours, weights = similarity ** alpha;
- database-side augmentation (DBA): the same for every gallery image among the gallery;
- k-reciprocal re-ranking (Zhong et al. 2017): images that are each other's neighbours
  get closer, via Jaccard distance of k-reciprocal neighbour sets;
- diffusion (Iscen et al. 2017, retrieval/diffusion.py): a random walk on the joint
  nearest-neighbour graph, sparse.
All take and return L2-normalised float32 arrays (rows = images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from competition.errors import CompeteError
from competition.retrieval.diffusion import diffuse
from competition.retrieval.posteriors import posterior_agreement, rescore
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
# a query's best photos by cosine that label fusion re-orders: a boost rarely lifts a photo from beyond the
# first thousand (the GLR winners applied theirs to the top 100-1000), and O(queries x 1000) at any gallery size
FUSION_CANDIDATES = 1000
Fusion = tuple[np.ndarray, np.ndarray]  # rows whose inner products are the fusion term (retrieval/posteriors.py)
RERANK_MAX = 20_000  # query + gallery images k-reciprocal re-ranking accepts: it holds (Q+G)^2 distances
# diffusion's exact kNN graph: 101k photos took 113 s, 2.6 GB on 2 CPU cores (scripts/bench_diffusion.py); 4x here
DIFFUSION_MAX = 200_000


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


def k_reciprocal_distance(
    queries: np.ndarray,
    gallery: np.ndarray,
    k1: int = 8,
    k2: int = 3,
    lambda_value: float = 0.3,
    fusion: Fusion | None = None,
) -> np.ndarray:
    """Re-ranked (num_queries, num_gallery) distances, smaller = more similar.

    Follows Zhong et al. (CVPR 2017) on the joint query+gallery set; memory is O((Q+G)^2),
    fine up to tens of thousands of images. With `fusion`, the joint similarity is the fused
    one (retrieval/posteriors.py), scaled back to at most 1."""
    rows = joint_rows(queries, gallery, fusion)
    return _k_reciprocal(rows @ rows.T, len(queries), k1, k2, lambda_value)[:, len(queries) :]


def joint_rows(queries: np.ndarray, gallery: np.ndarray, fusion: Fusion | None = None) -> np.ndarray:
    """Query and gallery photos as one set of rows whose inner products are their similarity:
    the cosine, or with `fusion` the fused score (retrieval/posteriors.py) scaled back to at most 1."""
    rows = l2_normalize(np.concatenate([queries, gallery]))
    if fusion is None:
        return rows
    fused = np.concatenate(fusion)
    return np.concatenate([rows, fused], axis=1) / np.sqrt(1 + float((fused**2).sum(axis=1).max()))


def k_reciprocal_within(vectors: np.ndarray, k1: int = 8, k2: int = 3, lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (n, n) distances among one set whose every photo queries the others (validation
    pools); the diagonal is each photo's distance to itself."""
    x = l2_normalize(vectors)
    return _k_reciprocal(x @ x.T, len(x), k1, k2, lambda_value)


def _k_reciprocal(similarity: np.ndarray, num_queries: int, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Distances of the first `num_queries` rows of a joint set to all of it, from its similarities."""
    total = len(similarity)
    k1, k2 = min(k1, total - 1), min(k2, total - 1)
    original = np.clip(2 - 2 * similarity, 0, None)  # squared euclidean of unit vectors
    original = original / np.maximum(original.max(axis=1, keepdims=True), 1e-12)
    ranks = np.argsort(original, axis=1, kind="stable")
    expansion_weights = np.zeros_like(original)
    for i in range(total):
        reciprocal = _k_reciprocal_set(ranks, i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = _k_reciprocal_set(ranks, candidate, int(np.around(k1 / 2)))
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
    return jaccard * (1 - lambda_value) + original[:num_queries] * lambda_value


def _k_reciprocal_set(ranks: np.ndarray, index: int, k: int) -> np.ndarray:
    forward = ranks[index, : k + 1]
    backward = ranks[forward, : k + 1]
    return forward[np.any(backward == index, axis=1)]


def too_large(steps: PostProcess, images: int) -> str:
    """Why the re-ranking of `steps` cannot run on this many query + gallery images ("" if it can)."""
    if steps.rerank and images > RERANK_MAX:
        return (
            f"k-reciprocal re-ranking holds (query + gallery)^2 distances: {images:,} images would need "
            f"~{images**2 * 8 / 1e9:.0f} GB, so it stops at {RERANK_MAX:,}"
        )
    if steps.diffusion and images > DIFFUSION_MAX:
        return (
            f"diffusion's graph is found by exact search, quadratic in the images: {images:,} would take hours "
            f"on a CPU, so it stops at {DIFFUSION_MAX:,}"
        )
    return ""


def check_size(steps: PostProcess, images: int) -> None:
    """Refuse, before any work, a re-ranking too large to run (see too_large)."""
    if reason := too_large(steps, images):
        raise CompeteError(f"{reason}; use --qe / --dba, which find neighbours with faiss")


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
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ranking) of the top-k from vectors that went through `embedding_steps`, larger =
    better: the similarity, minus the re-ranked distance (k-reciprocal) or the walk's weight
    (diffusion). `fusion` (query rows, gallery rows): label fusion, re-ordering each query's
    FUSION_CANDIDATES best by cosine (or, re-ranked, inside the joint similarity)."""
    check_size(steps, len(queries) + len(gallery))
    if steps.diffusion:
        return diffuse(
            joint_rows(queries, gallery, fusion), np.arange(len(queries)), k, gallery_from=len(queries), **_walk(steps)
        )
    if steps.rerank:
        distances = k_reciprocal_distance(queries, gallery, steps.rerank_k1, steps.rerank_k2, fusion=fusion)
        ranking = np.argsort(distances, axis=1, kind="stable")[:, : min(k, len(gallery))]
        return -np.take_along_axis(distances, ranking, axis=1), ranking
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


def _walk(steps: PostProcess) -> dict:
    """diffuse()'s settings from the steps."""
    return {
        "neighbours": steps.diffusion_k,
        "alpha": steps.diffusion_alpha,
        "gamma": steps.diffusion_gamma,
        "truncate": steps.diffusion_truncate,
    }


def pool_ranking(steps: PostProcess, vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Each pool photo in `queries` ranks all the others after the DBA, α-QE, k-reciprocal or
    diffusion of `steps`, the pool being its own gallery (validation; dense but for diffusion,
    so pools up to RERANK_MAX)."""
    x = l2_normalize(vectors)
    if steps.diffusion:
        return diffuse(x, queries, k, **_walk(steps))[1]
    if steps.rerank:
        similarity = -k_reciprocal_within(x, steps.rerank_k1, steps.rerank_k2)[queries]
    else:
        gallery = database_augmentation(x, steps.dba, steps.alpha) if steps.dba else x
        expanded = x[queries]
        if steps.qe:  # the query's nearest others, never itself
            similarity = expanded @ gallery.T
            similarity[np.arange(len(queries)), queries] = -np.inf
            nearest = np.argsort(-similarity, axis=1, kind="stable")[:, : steps.qe]
            weights = np.power(np.clip(np.take_along_axis(similarity, nearest, axis=1), 0, None), steps.alpha)
            expanded = l2_normalize(expanded + np.einsum("nk,nkd->nd", weights, gallery[nearest]))
        similarity = expanded @ gallery.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]
