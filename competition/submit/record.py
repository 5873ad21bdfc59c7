"""What a submission leaves besides its file: its vectors for `compete report`, its score and
its leaderboard row."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import numpy as np

from competition.data.discover import Competition
from competition.errors import CompeteError
from competition.evaluate.leaderboard import add_record
from competition.evaluate.metrics import score_by_group
from competition.evaluate.scoring import flatten_scores
from competition.io import atomic_path
from competition.retrieval.postprocess import describe
from competition.settings.submit import SubmitConfig
from competition.submit.models import LoadedModel, view_of

log = logging.getLogger(__name__)


KEPT_VECTORS = 20_000  # of each side at most, a seeded sample: the report's t-SNE map reads them


def _kept(records: list, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(names, vectors) of at most KEPT_VECTORS photos, in their order: GLDv2's 760k gallery vectors
    would be 4.5 GB a submission, for a map that cannot show more than a sample."""
    rows = np.arange(len(records))
    if len(rows) > KEPT_VECTORS:
        rows = np.sort(np.random.default_rng(0).choice(len(rows), KEPT_VECTORS, replace=False))
    return np.array([records[i].name for i in rows]), vectors[rows]


def save_ranked_vectors(path: Path, competition: Competition, queries: np.ndarray, gallery: np.ndarray) -> None:
    query_names, queries = _kept(competition.query, queries)
    gallery_names, gallery = _kept(competition.gallery, gallery)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, query_names=query_names, queries=queries, gallery_names=gallery_names, gallery=gallery)


def score_ranking(ranking: np.ndarray, competition: Competition, map_k: int) -> dict | None:
    """Top-k accuracy and mAP (all, seen, unseen) when labels.csv covers every query and gallery photo."""
    if competition.has_eval_labels:
        return flatten_scores(
            score_by_group(
                ranking,
                [r.label for r in competition.query],
                [r.label for r in competition.gallery],
                seen_classes=set(competition.train_classes) or None,
                map_k=map_k,
            )
        )
    if competition.has_partial_labels:
        log.warning(
            "labels.csv gives a class to %s; scoring needs every query and gallery photo, so this "
            "submission is not scored",
            competition.label_coverage(),
        )
    return None


def describe_views(config: SubmitConfig, models: list[LoadedModel]) -> str:
    """The test-time augmentation and views, as the leaderboard shows them."""
    views = [view_of(m.settings, config) for m in models]
    parts = (
        (["flip"] if config.flip else [])
        + ([f"scales {','.join(map(str, config.scales))}"] if list(config.scales) != [1.0] else [])
        # an aspect view's size is the longest side a photo gets; smaller photos keep their own
        + sorted({f"aspect up to {v.size}" if v.resize == "aspect" else f"square {v.size}" for v in views})
    )
    return ", ".join(parts) or "none"


def record_row(config: SubmitConfig, path: Path, record: dict) -> None:
    """The leaderboard row; the file and its row go together, or the user is told how."""
    try:
        add_record(config.leaderboard, record)
    except (CompeteError, OSError) as error:
        reason = str(error) if isinstance(error, CompeteError) else (error.strerror or str(error))
        raise CompeteError(
            f"{path} is written and kept, but its leaderboard row could not be written ({reason}); record it "
            f"with `compete score {path} --data {config.data} --record --leaderboard {config.leaderboard}`"
        ) from error


def leaderboard_record(config: SubmitConfig, models: list[LoadedModel], weights: list[float], **facts) -> dict:
    """A leaderboard row: what was submitted, how, and every setting (enough to make it again)."""
    return {
        "name": facts.pop("name"),
        "data": Path(config.data).resolve().name,  # the folder's own name, also for "." or "../shared/realdev"
        "backbones": " + ".join(m.backbone for m in models),
        "regime": " + ".join(sorted({m.record.regime for m in models})),
        "augmentation": " + ".join(sorted({m.record.augmentation for m in models})),
        "tta": describe_views(config, models),
        "postprocess": describe(config.postprocess),
        **facts,
        "models": [m.label for m in models],
        "weights": weights,
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
