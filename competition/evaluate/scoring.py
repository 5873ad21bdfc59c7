"""Score a submission file against the competition's labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.data.discover import discover_competition
from competition.errors import CompeteError
from competition.evaluate.metrics import per_class_top1, relevance, score_by_group
from competition.evaluate.submission import photo_id, read_submission


def flatten_scores(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """{'all': {...}, 'seen': {...}} -> {'top1': .., 'seen_top1': .., ...} for tables and the leaderboard."""
    flat = {k: v for k, v in groups["all"].items() if k != "queries"}
    for group in ("seen", "unseen"):
        flat.update({f"{group}_{k}": v for k, v in groups.get(group, {}).items() if k != "queries"})
    return flat


@dataclass
class RankedSubmission:
    ranking: np.ndarray  # (queries, k) gallery indices; len(gallery_labels) - 1 marks a missing/unknown entry
    query_labels: list[str]
    gallery_labels: list[str | None]
    seen_classes: set[str] | None


def load_ranked_submission(submission: str | Path, data: str | Path) -> RankedSubmission:
    """A submission file as a ranking over the competition's labelled gallery."""
    competition = discover_competition(data, need_train=False)
    if not competition.has_eval_labels:
        raise CompeteError(f"{data}: labels.csv must give a class for every query and gallery image to score")
    fmt, rows = read_submission(submission)
    query_label = {photo_id(r.name, fmt): r.label for r in competition.query}
    unknown = sorted(set(rows) - set(query_label))
    if unknown:
        raise CompeteError(f"{submission}: queries not in {data}/query: {', '.join(unknown[:5])}")
    gallery_index = {photo_id(r.name, fmt): i for i, r in enumerate(competition.gallery)}
    missing_slot = len(competition.gallery)  # a rank left empty or naming an unknown image counts as a miss
    k = max((len(v) for v in rows.values()), default=1)
    queries = [photo_id(r.name, fmt) for r in competition.query]  # a query missing from the file: all misses
    ranking = np.full((len(queries), k), missing_slot, dtype=np.int64)
    for row, query in enumerate(queries):
        for rank, name in enumerate(rows.get(query, [])):
            ranking[row, rank] = gallery_index.get(name, missing_slot)
    gallery_labels = [r.label for r in competition.gallery] + [None]
    return RankedSubmission(ranking, [query_label[q] for q in queries], gallery_labels,
                            set(competition.train_classes) or None)


def score_submission(submission: str | Path, data: str | Path, map_k: int = 10) -> dict[str, float]:
    ranked = load_ranked_submission(submission, data)
    return flatten_scores(score_by_group(ranked.ranking, ranked.query_labels, ranked.gallery_labels,
                                         ranked.seen_classes, map_k=map_k))


def per_class_accuracy(submission: str | Path, data: str | Path) -> dict[str, float]:
    ranked = load_ranked_submission(submission, data)
    return per_class_top1(relevance(ranked.ranking, ranked.query_labels, ranked.gallery_labels), ranked.query_labels)
