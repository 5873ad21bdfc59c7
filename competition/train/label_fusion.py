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
from competition.retrieval.posteriors import LabelClassifier, fit_label_classifier
from competition.retrieval.search import neighbours_among
from competition.train.validation import MAP_K, Fold, PoolScores, compare, pool_queries, score_ranked

STRENGTHS = (10.0, 100.0)  # logistic regression's C on L2-normalised embeddings
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
PLATEAU = 0.01  # mAP@10 within this of the best counts as the best
# cosine neighbours of each pool query that the fusion re-orders: the whole pool at today's sizes
# (pools of hundreds), and O(n) memory at Google Landmarks' (a label boost rarely lifts a photo
# from beyond the first thousand, as the GLR winners applied theirs to the top 100-1000)
CANDIDATES = 1000

# (training photo indices) -> a function from feature rows to the run's embedding, fitted on those photos
HeadForFold = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]


@dataclass
class FusionChoice:
    strength: float
    weight: float
    scores: PoolScores  # closed folds, fused at the chosen strength and weight
    grid: dict  # "C=10 w=0.5" -> pooled mAP@10, for the run's summary


def posterior_agreement(posteriors: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """P(q).P(c) for each query and each of its candidates, in blocks of about 64 MB."""
    rows = max(1, (1 << 24) // max(1, candidates.shape[1] * posteriors.shape[1]))
    agreement = np.empty(candidates.shape, np.float32)
    for start in range(0, len(queries), rows):
        block = slice(start, start + rows)
        agreement[block] = np.einsum("qc,qkc->qk", posteriors[queries[block]], posteriors[candidates[block]])
    return agreement


def _fold_posteriors(embed, features, labels, fold: Fold, strength: float) -> np.ndarray:
    """Class posteriors of a fold's pool photos from a classifier fitted on its training photos."""
    classifier = fit_label_classifier(embed(features[fold.train]), labels[fold.train], strength)
    return classifier.posteriors(embed(features[fold.pool]))


def choose_fusion(
    features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], head_for: HeadForFold
) -> FusionChoice:
    """Strength and weight of the label fusion, chosen on closed folds (see the module). Each
    pool query's CANDIDATES nearest photos by cosine are found once per fold, in blocks; every
    strength and weight re-orders those lists (the whole pool, at today's sizes)."""
    neighbours = []
    for fold in folds:
        embed = head_for(fold.train)
        queries = pool_queries(labels[fold.pool])
        cosine, candidates = neighbours_among(embed(features[fold.pool]), CANDIDATES, queries)
        neighbours.append((embed, queries, cosine, candidates))
    scores: dict[tuple[float, float], PoolScores] = {}
    for strength in STRENGTHS:
        parts: dict[float, list[PoolScores]] = {w: [] for w in WEIGHTS}
        for fold, (embed, queries, cosine, candidates) in zip(folds, neighbours):
            agreement = posterior_agreement(
                _fold_posteriors(embed, features, labels, fold, strength), queries, candidates
            )
            for weight in WEIGHTS:
                order = np.argsort(-(cosine + weight * agreement), axis=1, kind="stable")[:, :MAP_K]
                ranking = np.take_along_axis(candidates, order, axis=1)
                parts[weight].append(score_ranked(ranking, queries, labels[fold.pool], fold.unseen))
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
