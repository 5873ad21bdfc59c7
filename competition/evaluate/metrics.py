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
GROUPS = ("all", "seen", "unseen")  # seen: the query's landmark is in train/
SHOWN_METRICS = ("top1", "top3", "top5", "top10", "map@10", "p@10", "map@100")


def score_key(group: str, metric: str) -> str:
    """The flat name tables, the leaderboard and summaries use: 'top1', 'seen_top1', 'unseen_map@10'."""
    return metric if group == "all" else f"{group}_{metric}"


def flatten_scores(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """{'all': {...}, 'seen': {...}} -> {'top1': .., 'seen_top1': .., ...}."""
    return {
        score_key(group, metric): value
        for group, scores in groups.items()
        for metric, value in scores.items()
        if metric != "queries"
    }


def relevance(ranking: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str]) -> np.ndarray:
    """Boolean (num_queries, k): is the gallery image at each rank of the query's class?

    A gallery image listed again in the same row counts only where it first appears, so
    mAP and precision stay within [0, 1] whatever a submission file holds."""
    gallery_labels = np.asarray(gallery_labels, dtype=object)
    hits = gallery_labels[ranking] == np.asarray(query_labels, dtype=object)[:, None]
    order = np.argsort(ranking, axis=1, kind="stable")  # equal indices side by side, earliest rank first
    repeated_sorted = np.zeros(ranking.shape, dtype=bool)
    repeated_sorted[:, 1:] = np.diff(np.take_along_axis(ranking, order, axis=1), axis=1) == 0
    repeated = np.zeros(ranking.shape, dtype=bool)
    np.put_along_axis(repeated, order, repeated_sorted, axis=1)
    return hits & ~repeated


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


def average_precision(hits: np.ndarray, k: int, relevant_counts: np.ndarray) -> np.ndarray:
    """AP@k of each query: sum_i P@i * rel_i / min(relevant in gallery, k)."""
    hits = hits[:, :k].astype(np.float64)
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    denominators = np.minimum(relevant_counts, k)
    return np.where(denominators > 0, (precision_at_i * hits).sum(1) / np.maximum(denominators, 1), 0.0)


def mean_average_precision(hits: np.ndarray, k: int, relevant_counts: np.ndarray) -> float:
    """mAP@k: the mean of `average_precision` over queries."""
    return float(average_precision(hits, k, relevant_counts).mean()) if len(hits) else float("nan")


def bootstrap_interval(
    values: np.ndarray, level: float = 0.9, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query values (one query = one point).

    Pass per-query differences between two methods on the same queries for a paired interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    rows = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    means = values[rows].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def answerable(query_labels: Sequence[str], gallery_labels: Sequence[str]) -> np.ndarray:
    """Boolean per query: does the gallery hold a photo of its landmark?"""
    in_gallery = set(gallery_labels)
    return np.array([q in in_gallery for q in query_labels], dtype=bool)


def _hits_and_relevant(
    ranking: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """`relevance`, and how many gallery photos share each query's class (AP's denominator)."""
    per_class = Counter(gallery_labels)
    counts = np.array([per_class[q] for q in query_labels], dtype=np.int64)
    return relevance(ranking, query_labels, gallery_labels), counts


def per_query_scores(
    ranking: np.ndarray,
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    ks: Sequence[int] = (1, 3, 10),
    map_k: int = 10,
) -> dict[str, np.ndarray]:
    """Each query's top-k hit (0/1) and AP@map_k: the points a bootstrap over queries resamples."""
    hits, counts = _hits_and_relevant(ranking, query_labels, gallery_labels)
    scores = {f"top{k}": hits[:, :k].any(axis=1).astype(np.float64) for k in ks}
    scores[f"map@{map_k}"] = average_precision(hits, map_k, counts)
    return scores


def score_ranking(
    ranking: np.ndarray,
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    map_k: int = 10,
) -> dict[str, float]:
    hits, counts = _hits_and_relevant(ranking, query_labels, gallery_labels)
    listed = ranking.shape[1]  # a file of 5 a row has no top-10 (it would read as top-5) nor p@10
    scores = {f"top{k}": topk_accuracy(hits, k) for k in ks if k <= listed}
    for cutoff in sorted({10, map_k}):  # @10 always, and @map_k (100 for Kaggle's GLR) too
        scores[f"map@{cutoff}"] = mean_average_precision(hits, cutoff, counts)  # AP@k counts what is listed
        if cutoff <= listed:
            scores[f"p@{cutoff}"] = precision_at_k(hits, cutoff)
    scores["queries"] = float(len(query_labels))
    return scores


def score_by_group(
    ranking: np.ndarray,
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    seen_classes: Collection[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    map_k: int = 10,
) -> dict[str, dict[str, float]]:
    """Scores overall and, when the training classes are known, for seen and unseen landmarks.

    A query with no photo of its landmark in the gallery is left out, as Kaggle's Google Landmark
    Retrieval metric leaves out its Ignored test images (no ranking can be right for it); `left_out`
    says how many were."""
    keep = answerable(query_labels, gallery_labels)
    ranking, query_labels = ranking[keep], [q for q, k in zip(query_labels, keep) if k]
    result = {"all": score_ranking(ranking, query_labels, gallery_labels, ks, map_k)}
    if not keep.all():
        result["all"]["left_out"] = float((~keep).sum())
    if seen_classes:
        seen_mask = np.array([q in seen_classes for q in query_labels], dtype=bool)
        for group, mask in (("seen", seen_mask), ("unseen", ~seen_mask)):
            if mask.any():
                result[group] = score_ranking(
                    ranking[mask], [q for q, m in zip(query_labels, mask) if m], gallery_labels, ks, map_k
                )
    return result
