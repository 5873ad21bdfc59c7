"""Recognition (`--format recognition`): one training landmark and a confidence per query, as
Kaggle's landmark recognition competitions want, instead of a ranking of the gallery.

When every model is a run with a label classifier, its posteriors (averaged over the ensemble by
its weights) name the landmark and the top posterior is the confidence: the classifier that
the closed-set fusion uses. Otherwise (off-the-shelf backbones, runs without a classifier) the
query's VOTERS nearest training photos vote, each with its cosine, as the Google Landmark
Recognition winners' nearest-neighbour classifiers did; the confidence is the winner's mean vote.
Either way a photo of a landmark training never saw tends to get a low confidence, which is
what GAP rewards (evaluate/recognition.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse

from competition.io import counted
from competition.retrieval.ensemble import fuse_concat
from competition.retrieval.search import search
from competition.submit.models import LoadedModel

VOTERS = 5  # nearest training photos that vote for a query's landmark


def vote(similarity: np.ndarray, labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each row's landmark with the largest summed similarity among its voters (ties: the nearer
    voter's), and that sum over the number of voters."""
    landmarks, confidence = [], np.zeros(len(similarity), np.float32)
    for row, (scores, names) in enumerate(zip(similarity, labels)):
        totals: dict[str, float] = {}
        for score, name in zip(scores, names):
            totals[name] = totals.get(name, 0.0) + float(score)
        best = max(totals, key=totals.get)  # dicts keep the nearest voter's landmark first: ties go to it
        landmarks.append(best)
        confidence[row] = totals[best] / len(scores)
    return landmarks, confidence


def _top(posteriors) -> tuple[np.ndarray, np.ndarray]:
    if sparse.issparse(posteriors):
        return np.asarray(posteriors.argmax(axis=1)).ravel(), posteriors.max(axis=1).toarray().ravel()
    return posteriors.argmax(axis=1), posteriors.max(axis=1)


def recognise(
    models: list[LoadedModel],
    weights: list[float],
    query_vectors: list[np.ndarray],
    embed_train: Callable[[LoadedModel], np.ndarray],
    train_labels: np.ndarray,
    main: bool = True,
) -> tuple[list[str], np.ndarray, str] | None:
    """(landmark, confidence) of each query and how they were found (see the module). `main`
    False: a torchrun rank other than 0, which only embeds its share of the training photos
    (None returned): one search, not one per rank each sharding an index over every GPU."""
    classifiers = [m.classifier for m in models]
    if all(c is not None for c in classifiers) and all(c.classes == classifiers[0].classes for c in classifiers):
        if not main:
            return None
        total = sum(weights)
        averaged = None
        for weight, classifier, vectors in zip(weights, classifiers, query_vectors):
            part = classifier.posteriors(vectors) * (weight / total)
            averaged = part if averaged is None else averaged + part
        best, confidence = _top(averaged)
        how = f"label classifier of {counted(len(models), 'run')}, top posterior as confidence"
        return [classifiers[0].classes[i] for i in best], np.asarray(confidence, np.float32), how
    train = fuse_concat([embed_train(m) for m in models], weights)
    if not main:
        return None
    similarity, nearest = search(fuse_concat(query_vectors, weights), train, VOTERS)
    landmarks, confidence = vote(similarity, np.asarray(train_labels)[nearest])
    return landmarks, confidence, f"vote of the {min(VOTERS, len(train))} nearest training photos"
