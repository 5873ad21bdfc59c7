"""Diffusion re-ranking (Iscen et al., CVPR 2017): a random walk with restart on the graph of
query and gallery photos together.

Two photos are joined when each counts the other among its `neighbours` most similar (mutual
nearest neighbours), with weight similarity**gamma; S = D^-1/2 W D^-1/2 is the graph's
symmetric normalisation. A query q ranks the gallery by the solution f of

    (I - alpha S) f = e_q

the share of a walk restarting at q (with probability 1 - alpha at each step) that stays at each
photo: a gallery photo reached through a chain of close photos ranks high even when it is far
from q itself. Each solve is truncated to q and its `truncate` nearest gallery photos, as at
index scale, and solved by conjugate gradient (the matrix is symmetric positive definite for
alpha < 1): memory O(n * neighbours) for the graph, never n x n. The graph's neighbours come from
rerank/graph.py (the gallery's own, cached, merged with the queries').

The settings used for Oxford and Paris (50 neighbours, alpha 0.99) suit landmarks with dozens of
gallery photos; on a gallery with ~5 photos a landmark a walk that long leaves the landmark, so
the settings are the validation's choice (train/postprocess_choice.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import cg

from competition.retrieval.rerank.graph import Neighbours

CG_ITERATIONS = 20  # conjugate-gradient steps a query's solve stops after (the reference implementations' 20)


def mutual_graph(nearest: Neighbours, neighbours: int, gamma: float) -> sparse.csr_matrix:
    """The (n, n) sparse affinity of mutual nearest neighbours (each photo's first `neighbours`)."""
    similarities, indices = nearest.similarities[:, :neighbours], nearest.indices[:, :neighbours]
    n = len(indices)
    weights = np.clip(similarities, 0, None) ** gamma
    directed = sparse.csr_matrix(
        (weights.ravel(), (np.repeat(np.arange(n), indices.shape[1]), indices.ravel())), (n, n)
    )
    graph = directed.minimum(directed.T)  # the weight is symmetric: the minimum keeps edges both ends chose
    graph.eliminate_zeros()
    return graph.tocsr()


def walk_matrix(graph: sparse.csr_matrix, alpha: float) -> sparse.csr_matrix:
    """I - alpha * D^-1/2 W D^-1/2."""
    scale = sparse.diags(1.0 / np.sqrt(np.asarray(graph.sum(axis=1)).ravel() + 1e-12))
    return (sparse.identity(graph.shape[0], format="csr") - alpha * (scale @ graph @ scale)).tocsr()


def diffuse(
    nearest: Neighbours,
    sources: np.ndarray,
    candidates: np.ndarray,
    k: int,
    neighbours: int = 10,
    alpha: float = 0.9,
    gamma: float = 3.0,
    gallery_from: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ranking) of each source's top k by the walk's weight, each walk truncated to the
    source and its `candidates` (its nearest photos it may rank: from `gallery_from` on, never
    itself; at least k). Indices count from `gallery_from`."""
    sources = np.asarray(sources, np.int64)
    walk = walk_matrix(mutual_graph(nearest, neighbours, gamma), alpha)
    k = min(k, candidates.shape[1])
    scores, ranking = np.empty((len(sources), k), np.float32), np.empty((len(sources), k), np.int64)
    restart = np.zeros(candidates.shape[1] + 1)
    restart[0] = 1.0
    for i, (source, closest) in enumerate(zip(sources, candidates)):
        ids = np.concatenate([[source], closest])
        weights, _ = cg(walk[ids][:, ids], restart, rtol=1e-6, maxiter=CG_ITERATIONS)
        order = np.argsort(-weights[1:], kind="stable")[:k]
        scores[i], ranking[i] = weights[1:][order], closest[order] - gallery_from
    return scores, ranking


@dataclass(frozen=True)
class Diffusion:
    """Diffusion as `--re-ranking diffusion` runs it; its settings are PostProcess's diffusion_*."""

    name: ClassVar[str] = "diffusion"
    SETTINGS: ClassVar[str] = "diffusion_"
    k: int = 10  # mutual nearest neighbours per photo
    alpha: float = 0.9
    gamma: float = 3.0
    truncate: int = 1000  # each query's walk stays on its nearest gallery photos

    @property
    def width(self) -> int:
        """The neighbours it reads per photo."""
        return self.k

    def depth(self, k: int) -> int:
        """The candidates a query's walk needs to rank its top k."""
        return max(k, self.truncate)

    def held_per_photo(self) -> int:
        """Bytes its mutual graph holds per photo beyond the nearest-neighbour graphs (four copies)."""
        return 4 * 12 * self.k

    def run(self, rows, graph, sources, candidates, k: int, gallery_from: int) -> tuple[np.ndarray, np.ndarray]:
        return diffuse(graph, sources, candidates, k, self.k, self.alpha, self.gamma, gallery_from)

    def describe(self) -> str:
        return f"diffusion k={self.k} α={self.alpha:g}"
