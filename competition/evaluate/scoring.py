"""Score a submission file against the competition's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from competition.data.discover import discover_competition
from competition.errors import CompeteError
from competition.evaluate.metrics import score_by_group
from competition.evaluate.submission import read_submission


def flatten_scores(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """{'all': {...}, 'seen': {...}} -> {'top1': .., 'seen_top1': .., ...} for tables and the leaderboard."""
    flat = {k: v for k, v in groups["all"].items() if k != "queries"}
    for group in ("seen", "unseen"):
        flat.update({f"{group}_{k}": v for k, v in groups.get(group, {}).items() if k != "queries"})
    return flat


def score_submission(submission: str | Path, data: str | Path) -> dict[str, float]:
    competition = discover_competition(data, need_train=False)
    if not competition.has_eval_labels:
        raise CompeteError(f"{data}: labels.csv must give a class for every query and gallery image to score")
    rows = read_submission(submission)
    query_label = {r.name: r.label for r in competition.query}
    unknown = sorted(set(rows) - set(query_label))
    if unknown:
        raise CompeteError(f"{submission}: queries not in {data}/query: {', '.join(unknown[:5])}")
    gallery_index = {r.name: i for i, r in enumerate(competition.gallery)}
    missing_slot = len(competition.gallery)  # a rank left empty or naming an unknown image counts as a miss
    k = max((len(v) for v in rows.values()), default=1)
    queries = [r.name for r in competition.query]  # a query missing from the file counts as all misses
    ranking = np.full((len(queries), k), missing_slot, dtype=np.int64)
    for row, query in enumerate(queries):
        for rank, name in enumerate(rows.get(query, [])):
            ranking[row, rank] = gallery_index.get(name, missing_slot)
    gallery_labels = [r.label for r in competition.gallery] + [None]
    seen = set(competition.train_classes) or None
    return flatten_scores(score_by_group(ranking, [query_label[q] for q in queries], gallery_labels, seen))
