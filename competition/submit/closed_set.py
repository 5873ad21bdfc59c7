"""Closed-set queries: whether the queries show training landmarks (`--landmarks auto`), and the
runs' class posteriors fused into the ranking when they do."""

from __future__ import annotations

import logging

from competition.io import counted
from competition.retrieval.landmarks import KnownShare, estimate_known_share
from competition.retrieval.posteriors import top_posterior, weighted_posteriors
from competition.submit.models import LoadedModel

log = logging.getLogger(__name__)


def resolve_landmarks(setting: str, models: list[LoadedModel], query_posteriors) -> tuple[str, KnownShare | None]:
    """The kind of competition: as given, or for `auto` estimated from the queries' top class
    posteriors (`query_posteriors(model)`) under the first run's calibration (retrieval/landmarks.py)."""
    if setting != "auto":
        return setting, None
    calibrated = [m for m in models if m.classifier is not None and m.classifier.calibration]
    if not calibrated:
        return "mixed", KnownShare(None, None, None, "mixed", 0)
    model = calibrated[0]
    top = top_posterior(query_posteriors(model))
    estimate = estimate_known_share(top, model.classifier.calibration)
    return estimate.choice, estimate


def label_fusion(models, weights, query_vectors, gallery_vectors, landmarks: str, posteriors=None):
    """The runs' class posteriors (averaged by the ensemble weights), as the rows whose inner
    products are the fusion term (retrieval/posteriors.py): for `known` at the closed-set weight
    for every photo, for `mixed` at the gated weight scaled by each photo's P(known). Returns
    (query rows, gallery rows) or None, and a note of what was fused. `posteriors`: a pair of
    functions (model -> its posteriors of the queries, of the gallery) where the caller makes
    them (once, with progress), else the classifiers are asked here."""
    if landmarks not in ("known", "mixed"):
        return None, "off"
    known = landmarks == "known"
    with_classifier = [
        i for i, m in enumerate(models) if m.classifier is not None and (known or m.classifier.gate is not None)
    ]
    if not with_classifier:
        if not known:
            return None, "off"
        log.warning("--landmarks known: no model has a label classifier (train a last-layer run); ranking by cosine")
        return None, "none (no run with a label classifier)"
    classes = models[with_classifier[0]].classifier.classes
    if any(models[i].classifier.classes != classes for i in with_classifier):
        log.warning("--landmarks %s: the runs were trained on different landmarks; ranking by cosine", landmarks)
        return None, "none (runs of different landmarks)"
    total = sum(weights[i] for i in with_classifier)

    def averaged(of_run):  # over the runs with a classifier, by their ensemble weights
        return sum(weights[i] / total * of_run(models[i].classifier, i) for i in with_classifier)

    weight = float(averaged(lambda c, i: c.weight if known else c.gated_weight))
    if not known and weight == 0:
        return None, "off (the gated weight chosen on the mixed folds is 0)"

    def rows(vectors, made):
        of = {i: made(models[i]) if made else models[i].classifier.posteriors(vectors[i]) for i in with_classifier}
        chance = None if known else averaged(lambda c, i: c.known_probability(vectors[i], of[i]))
        return weighted_posteriors(averaged(lambda c, i: of[i]), weight, chance)

    made = posteriors or (None, None)
    fusion = (rows(query_vectors, made[0]), rows(gallery_vectors, made[1]))
    runs = f"class posteriors of {counted(len(with_classifier), 'run')}"
    if known:
        return fusion, f"{runs}, weight {weight:g}"
    auc = float(averaged(lambda c, i: c.gate.auc))
    return fusion, f"per query: {runs}, weight {weight:g} x P(known) (AUC {auc:.2f})"
