"""Score a submission file against the competition's labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.data.discover import Competition, discover_competition
from competition.errors import CompeteError
from competition.evaluate.formats import CSV, SubmissionFormat
from competition.evaluate.metrics import answerable, flatten_scores, per_class_top1, relevance, score_by_group
from competition.evaluate.submission import read_submission, require_submission


@dataclass
class RankedSubmission:
    ranking: np.ndarray  # (queries, k) gallery indices; len(gallery_labels) - 1 marks a missing/unknown entry
    query_labels: list[str]
    gallery_labels: list[str | None]
    seen_classes: set[str] | None
    fmt: SubmissionFormat = CSV  # the file's format (its default_k: mAP@k scored by default)


def load_ranked_submission(
    submission: str | Path, data: str | Path, competition: Competition | None = None
) -> RankedSubmission:
    """A submission file as a ranking over the competition's labelled gallery."""
    competition = competition or discover_competition(data, need_train=False)
    if not competition.has_eval_labels:
        raise CompeteError(f"{data}: labels.csv must give a class for every query and gallery image to score")
    fmt, rows = read_submission(submission)
    query_label = {fmt.photo(r.name): r.label for r in competition.query}
    unknown = sorted(set(rows) - set(query_label))
    if unknown:
        raise CompeteError(f"{submission}: queries not in {data}/query: {', '.join(unknown[:5])}")
    gallery_index = {fmt.photo(r.name): i for i, r in enumerate(competition.gallery)}
    missing_slot = len(competition.gallery)  # a rank left empty or naming an unknown image counts as a miss
    k = max((len(v) for v in rows.values()), default=1)
    queries = [fmt.photo(r.name) for r in competition.query]  # a query missing from the file: all misses
    ranking = np.full((len(queries), k), missing_slot, dtype=np.int64)
    for row, query in enumerate(queries):
        for rank, name in enumerate(rows.get(query, [])):
            ranking[row, rank] = gallery_index.get(name, missing_slot)
    gallery_labels = [r.label for r in competition.gallery] + [None]
    return RankedSubmission(
        ranking, [query_label[q] for q in queries], gallery_labels, set(competition.train_classes) or None, fmt
    )


@dataclass
class ScoredSubmission:
    """What `compete score`, `compete report` and scripts read from one scoring of a file."""

    ranked: RankedSubmission
    competition: Competition
    hits: np.ndarray  # (queries, k): is each rank of the query's landmark?
    scores: dict[str, float]  # flat names: top1, seen_top1, ... (see metrics.score_key)
    per_class: dict[str, float]  # top-1 of each landmark's queries


def score_file(submission: str | Path, data: str | Path, map_k: int = 0) -> ScoredSubmission:
    """Read a submission once and score it against the competition's labels; mAP@`map_k` beside
    mAP@10, 0 choosing as submit does: 100 for a kaggle-format file (what Kaggle scores), else 10."""
    require_submission(submission)
    competition = discover_competition(data, need_train=False)
    ranked = load_ranked_submission(submission, data, competition)
    map_k = map_k or ranked.fmt.default_k
    hits = relevance(ranked.ranking, ranked.query_labels, ranked.gallery_labels)
    scores = flatten_scores(
        score_by_group(ranked.ranking, ranked.query_labels, ranked.gallery_labels, ranked.seen_classes, map_k=map_k)
    )
    keep = answerable(ranked.query_labels, ranked.gallery_labels)  # as the scores: only queries that can be right
    per_class = per_class_top1(hits[keep], [q for q, k in zip(ranked.query_labels, keep) if k])
    return ScoredSubmission(ranked, competition, hits, scores, per_class)


def left_out_note(scores: dict[str, float]) -> str | None:
    """What a reader of the scores must know when queries were left out of them."""
    left_out = int(scores.get("left_out", 0))
    if not left_out:
        return None
    return (
        f"{left_out} quer{'y' if left_out == 1 else 'ies'} with no photo of its landmark in the gallery "
        "left out of the scores, as Kaggle's Google Landmark Retrieval metric leaves them out"
    )


def score_submission(submission: str | Path, data: str | Path, map_k: int = 0) -> dict[str, float]:
    return score_file(submission, data, map_k).scores
