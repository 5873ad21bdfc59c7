"""Pseudo-labels: unlabeled query/gallery photos that are confidently the same landmark.

Two photos that are each other's nearest neighbour (mutual NN) under the pretrained
embedding, with a similarity above a threshold, are taken as one new class; linked
pairs merge into one class. The threshold is calibrated on the held-out classes, where
labels are known: the lowest similarity at which mutual-NN pairs there are still at least
`precision` correct. New classes from the test photos teach the embedding about
landmarks that are not in train/ (transductive; off unless asked for).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from competition.data.discover import ImageRecord, discover_competition
from competition.retrieval.vectors import l2_normalize
from competition.train.run import Run

log = logging.getLogger(__name__)


def mutual_nearest_pairs(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pairs i<j that are each other's nearest neighbour, their cosine similarity)."""
    x = l2_normalize(vectors)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    i = np.arange(len(x))
    mutual = (nearest[nearest] == i) & (i < nearest)
    pairs = np.stack([i[mutual], nearest[mutual]], axis=1)
    return pairs, similarity[pairs[:, 0], pairs[:, 1]] if len(pairs) else np.zeros(0)


def calibrate_threshold(vectors: np.ndarray, labels: list[str], precision: float = 0.9) -> float | None:
    """Lowest similarity above which labelled mutual-NN pairs are >= `precision` correct."""
    pairs, similarity = mutual_nearest_pairs(vectors)
    if not len(pairs):
        return None
    labels = np.asarray(labels, dtype=object)
    correct = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    order = np.argsort(-similarity)
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    good = np.flatnonzero(running >= precision)
    return float(similarity[order][good[-1]]) if len(good) else None


def pseudo_classes(records: list[ImageRecord], vectors: np.ndarray, threshold: float) -> list[ImageRecord]:
    """Records of the unlabeled photos that join a pseudo-class, labelled 'pseudo-NNNN'."""
    pairs, similarity = mutual_nearest_pairs(vectors)
    pairs = pairs[similarity >= threshold]
    if not len(pairs):
        return []
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(records), len(records)))
    _, component = connected_components(graph, directed=False)
    members = np.unique(pairs)
    return [ImageRecord(records[i].path, records[i].key, "pseudo", f"pseudo-{component[i]:04d}") for i in members]


def add_pseudo_labels(run: Run) -> None:
    """Extra training classes from confident mutual neighbours among query/gallery photos,
    the threshold calibrated on the training landmarks (labels known, pretrained features)."""
    found = discover_competition(run.config.data, need_train=False)
    unlabeled = found.query + found.gallery
    if not unlabeled:
        log.warning("pseudo-labels need query/gallery photos; none added")
        return
    features = run.pretrained_features(run.data.photos, "calibrate")  # every rank embeds its share
    labelled, labels = features.rows(run.data.photos)
    # decided on rank 0 alone and shared: ranks that drew different classes would train different heads
    threshold = run.dist.share(
        calibrate_threshold(labelled.whole(), list(labels), run.config.pseudo_precision) if run.dist.is_main else None
    )
    if threshold is None:
        log.warning(
            "pseudo-labels: no similarity reaches precision %.2f on the training landmarks; none added",
            run.config.pseudo_precision,
        )
        return
    vectors = run.pretrained_features(unlabeled, "pseudo-labels")
    readable = [r for r in unlabeled if r.path in vectors]  # unreadable photos must not pair up
    added = run.dist.share(
        pseudo_classes(readable, vectors.rows(readable)[0].whole(), threshold) if run.dist.is_main else []
    )
    run.data.extra = added
    run.pseudo = {"threshold": threshold, "images": len(added), "classes": len({r.label for r in added})}
