"""Nearest gallery images for each query by cosine similarity, with faiss.

Vectors are L2-normalised, so inner product is cosine similarity. The GPU index is
used when faiss was built with CUDA and a GPU is present; queries are searched in
batches so memory stays bounded for large query sets.
"""

from __future__ import annotations

import faiss
import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def build_index(gallery: np.ndarray, use_gpu: bool | None = None) -> faiss.Index:
    index = faiss.IndexFlatIP(gallery.shape[1])
    if (use_gpu is None and _gpu_count() > 0) or use_gpu:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(l2_normalize(gallery))
    return index


def search(queries: np.ndarray, gallery: np.ndarray, k: int, use_gpu: bool | None = None,
           batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, gallery indices), each (num_queries, min(k, gallery size)), best first."""
    k = min(k, len(gallery))
    index = build_index(gallery, use_gpu)
    queries = l2_normalize(queries)
    parts = [index.search(queries[start:start + batch_size], k) for start in range(0, len(queries), batch_size)]
    if not parts:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def leave_one_out_ranking(embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """Each row queries all the others (itself excluded): validation without a separate gallery."""
    x = l2_normalize(embeddings)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(x) - 1)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]
