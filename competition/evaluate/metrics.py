"""Retrieval metrics over a ranking, as small pure functions on label arrays.

A ranking is a (num_queries, k) array of gallery indices, best first. Top-k accuracy
asks "is any of the first k of the query's landmark?"; mAP@k also rewards finding all
of them early (as in the Google Landmark Retrieval challenge).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np

DEFAULT_KS = (1, 3, 5, 10)


def relevance(ranking: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str]) -> np.ndarray:
    """Boolean (num_queries, k): is the gallery image at each rank of the query's class?"""
    gallery_labels = np.asarray(gallery_labels, dtype=object)
    return gallery_labels[ranking] == np.asarray(query_labels, dtype=object)[:, None]


def topk_accuracy(hits: np.ndarray, k: int) -> float:
    return float(hits[:, :k].any(axis=1).mean()) if len(hits) else float("nan")


def precision_at_k(hits: np.ndarray, k: int) -> float:
    """Mean fraction of the first k results that are of the query's landmark."""
    return float(hits[:, :k].mean(axis=1).mean()) if len(hits) and hits.shape[1] >= k else float("nan")


def per_class_top1(hits: np.ndarray, query_labels: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy of each landmark's queries: which landmarks the model gets wrong."""
    correct: dict[str, list[bool]] = {}
    for label, hit in zip(query_labels, hits[:, 0].tolist()):
        correct.setdefault(label, []).append(hit)
    return {label: float(np.mean(values)) for label, values in sorted(correct.items())}


def mean_average_precision(hits: np.ndarray, k: int, relevant_counts: np.ndarray) -> float:
    """mAP@k with AP@k = sum_i P@i * rel_i / min(relevant in gallery, k)."""
    if not len(hits):
        return float("nan")
    hits = hits[:, :k].astype(np.float64)
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    denominators = np.minimum(relevant_counts, k)
    ap = np.where(denominators > 0, (precision_at_i * hits).sum(1) / np.maximum(denominators, 1), 0.0)
    return float(ap.mean())


def score_ranking(ranking: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str],
                  ks: Sequence[int] = DEFAULT_KS, map_k: int = 10) -> dict[str, float]:
    hits = relevance(ranking, query_labels, gallery_labels)
    per_class = Counter(gallery_labels)
    counts = np.array([per_class[q] for q in query_labels], dtype=np.int64)
    scores = {f"top{k}": topk_accuracy(hits, k) for k in ks}
    scores[f"map@{map_k}"] = mean_average_precision(hits, map_k, counts)
    scores[f"p@{map_k}"] = precision_at_k(hits, map_k)
    scores["queries"] = float(len(query_labels))
    return scores


def score_by_group(ranking: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str],
                   seen_classes: Collection[str] | None = None, ks: Sequence[int] = DEFAULT_KS,
                   map_k: int = 10) -> dict[str, dict[str, float]]:
    """Scores overall and, when the training classes are known, for seen and unseen landmarks."""
    result = {"all": score_ranking(ranking, query_labels, gallery_labels, ks, map_k)}
    if seen_classes:
        seen_mask = np.array([q in seen_classes for q in query_labels], dtype=bool)
        for group, mask in (("seen", seen_mask), ("unseen", ~seen_mask)):
            if mask.any():
                result[group] = score_ranking(ranking[mask], [q for q, m in zip(query_labels, mask) if m],
                                              gallery_labels, ks, map_k)
    return result

