"""The label classifier a run keeps for closed-set queries, chosen on validation folds.

Closed folds (photos of every landmark held out, none held out whole) stand in for a
competition whose queries are training landmarks: each fold fits the classifier on its
training photos, and its pool is ranked by cosine + weight * P(q).P(g) for a small grid
of classifier strengths and weights. The strength with the best pooled mAP@10 wins; the
weight is the smallest within PLATEAU of that best, since a larger weight buys nothing
on these folds and costs the most if a query's landmark is not in train/ after all.

Folds with held-out landmarks then calibrate the top posterior as a test of "this photo
shows a training landmark" (retrieval/landmarks.py), which `--landmarks auto` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from competition.retrieval.landmarks import calibrate_known
from competition.retrieval.posteriors import LabelClassifier, fit_label_classifier, fused_similarity
from competition.retrieval.search import l2_normalize
from competition.train.validation import Fold, PoolScores, compare, score_similarity

STRENGTHS = (10.0, 100.0)  # logistic regression's C on L2-normalised embeddings
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
PLATEAU = 0.01  # mAP@10 within this of the best counts as the best

# (training photo indices) -> a function from feature rows to the run's embedding, fitted on those photos
HeadForFold = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]


@dataclass
class FusionChoice:
    strength: float
    weight: float
    scores: PoolScores  # closed folds, fused at the chosen strength and weight
    grid: dict  # "C=10 w=0.5" -> pooled mAP@10, for the run's summary


def _fold_posteriors(embed, features, labels, fold: Fold, strength: float) -> np.ndarray:
    """Class posteriors of a fold's pool photos from a classifier fitted on its training photos."""
    classifier = fit_label_classifier(embed(features[fold.train]), labels[fold.train], strength)
    return classifier.posteriors(embed(features[fold.pool]))


def choose_fusion(
    features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], head_for: HeadForFold
) -> FusionChoice:
    """Strength and weight of the label fusion, chosen on closed folds (see the module)."""
    embeddings = []
    for fold in folds:
        embed = head_for(fold.train)
        pool = l2_normalize(embed(features[fold.pool]))
        embeddings.append((embed, pool @ pool.T))
    scores: dict[tuple[float, float], PoolScores] = {}
    for strength in STRENGTHS:
        parts: dict[float, list[PoolScores]] = {w: [] for w in WEIGHTS}
        for fold, (embed, cosine) in zip(folds, embeddings):
            posteriors = _fold_posteriors(embed, features, labels, fold, strength)
            for weight in WEIGHTS:
                fused = fused_similarity(cosine, posteriors, posteriors, weight)
                parts[weight].append(score_similarity(fused, labels[fold.pool], fold.unseen))
        scores.update({(strength, w): PoolScores.concat(p) for w, p in parts.items()})
    # judged on queries of training landmarks only: the fusion is for them (closed folds hold no others)
    quality = {key: float(s.ap[~s.unseen].mean()) if (~s.unseen).any() else float("-inf") for key, s in scores.items()}
    best_strength = max(STRENGTHS, key=lambda c: max(quality[(c, w)] for w in WEIGHTS))
    best = max(quality[(best_strength, w)] for w in WEIGHTS)
    weight = min(w for w in WEIGHTS if quality[(best_strength, w)] >= best - PLATEAU)
    grid = {f"C={c:g} w={w:g}": round(q, 4) for (c, w), q in quality.items()}
    return FusionChoice(best_strength, weight, scores[(best_strength, weight)], grid)


def calibrate_on_folds(
    features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], head_for: HeadForFold, strength: float
) -> dict:
    """Top-posterior threshold between photos of training and of held-out landmarks, over the
    folds that hold landmarks out ({} when none does)."""
    tops, known = [], []
    for fold in folds:
        if not fold.unseen.any():
            continue
        posteriors = _fold_posteriors(head_for(fold.train), features, labels, fold, strength)
        tops.append(posteriors.max(axis=1))
        known.append(~fold.unseen)
    return calibrate_known(np.concatenate(tops), np.concatenate(known)) if tops else {}


def fit_label_fusion(
    features: np.ndarray,
    labels: np.ndarray,
    closed_folds: Sequence[Fold],
    mixed_folds: Sequence[Fold],
    head_for: HeadForFold,
    final_embedding: Callable[[np.ndarray], np.ndarray],
    baseline: PoolScores,
    seed: int = 0,
) -> tuple[dict, LabelClassifier]:
    """A run's label classifier: strength and weight chosen on `closed_folds`, calibrated on
    `mixed_folds`, fitted on every photo's `final_embedding`; and for the run's summary, what
    the folds said of it against `baseline` (the pretrained backbone on the closed folds)."""
    choice = choose_fusion(features, labels, closed_folds, head_for)
    calibration = calibrate_on_folds(features, labels, mixed_folds, head_for, choice.strength)
    classifier = fit_label_classifier(final_embedding(features), labels, choice.strength)
    classifier.weight, classifier.calibration = choice.weight, calibration
    verdict = compare(choice.scores, baseline, seed=seed)
    summary = {
        "strength": choice.strength,
        "weight": choice.weight,
        "calibration": calibration,
        "grid_map@10": choice.grid,
        "validation": {"seen": verdict["seen"]},  # queries of training landmarks, the fusion included
    }
    return summary, classifier
