"""Closed-set queries: whether the queries show training landmarks (`--landmarks auto`), and the
runs' class posteriors fused into the ranking when they do."""

from __future__ import annotations

import logging

from competition.retrieval.landmarks import KnownShare, estimate_known_share
from competition.retrieval.posteriors import fuse_for_search
from competition.submit.models import LoadedModel

log = logging.getLogger(__name__)


def resolve_landmarks(setting: str, models: list[LoadedModel], embed_queries) -> tuple[str, KnownShare | None]:
    """The kind of competition: as given, or for `auto` estimated from the queries' top class
    posteriors under the first run's calibration (retrieval/landmarks.py)."""
    if setting != "auto":
        return setting, None
    calibrated = [m for m in models if m.classifier is not None and m.classifier.calibration]
    if not calibrated:
        return "mixed", KnownShare(None, None, None, "mixed", 0)
    model = calibrated[0]
    top = model.classifier.posteriors(embed_queries(model)).max(axis=1)
    estimate = estimate_known_share(top, model.classifier.calibration)
    return estimate.choice, estimate


def fuse_label_posteriors(models, weights, query_vectors, gallery_vectors, queries, gallery):
    """For known landmarks: the runs' class posteriors (weighted like the ensemble) fused into the
    ranking vectors; returns them and a note of what was fused."""
    with_classifier = [i for i, m in enumerate(models) if m.classifier is not None]
    if not with_classifier:
        log.warning("--landmarks known: no model has a label classifier (train a last-layer run); ranking by cosine")
        return queries, gallery, "none (no run with a label classifier)"
    classes = models[with_classifier[0]].classifier.classes
    if any(models[i].classifier.classes != classes for i in with_classifier):
        log.warning("--landmarks known: the runs were trained on different landmarks; ranking by cosine")
        return queries, gallery, "none (runs of different landmarks)"
    total = sum(weights[i] for i in with_classifier)

    def averaged(of_run):  # over the runs with a classifier, by their ensemble weights
        return sum(weights[i] / total * of_run(i) for i in with_classifier)

    query_p = averaged(lambda i: models[i].classifier.posteriors(query_vectors[i]))
    gallery_p = averaged(lambda i: models[i].classifier.posteriors(gallery_vectors[i]))
    weight = float(averaged(lambda i: models[i].classifier.weight))
    fused_q, fused_g = fuse_for_search(queries, gallery, query_p, gallery_p, weight)
    return fused_q, fused_g, f"class posteriors of {len(with_classifier)} run(s), weight {weight:g}"
