"""The label classifier a run keeps for queries of training landmarks, chosen on validation folds.

Closed folds (photos of every landmark held out, none held out whole) stand in for a
competition whose queries are training landmarks: each fold fits the classifier on its
training photos, and its pool is ranked by cosine + weight * P(q).P(g) for a small grid
of classifier strengths and weights. The strength with the best pooled mAP@10 wins; the
weight is the smallest within PLATEAU of that best, since a larger weight buys nothing
on these folds and costs the most if a query's landmark is not in train/ after all.

Mixed folds (landmarks held out whole besides photos of the others) stand in for a mixed
set. On them the classifier's top posterior is calibrated as a test of "this photo shows a
training landmark" (what `--landmarks auto` estimates the query mix from), the known-landmark
gate is fitted (retrieval/landmarks.KnownGate), and the gated weight is chosen: the pool
ranked by cosine + weight * gate(q) * gate(g) * P(q).P(g), the gate of each fold fitted on
the other folds (so no photo judges a gate it trained): the best mAP@10 over all queries
among the weights that cost queries of held-out landmarks at most PLATEAU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from competition.progress import steps
from competition.retrieval.landmarks import KnownGate, calibrate_known, fit_known_gate
from competition.retrieval.neighbours import neighbours_among
from competition.retrieval.posteriors import (
    FUSION_CANDIDATES,
    LabelClassifier,
    fit_label_classifier,
    posterior_agreement,
    rescore,
    top_posterior,
    weighted_posteriors,
)
from competition.retrieval.vectors import Rows
from competition.train.folds import Fold
from competition.train.validation import MAP_K, PoolScores, compare, pool_queries, score_ranked

STRENGTHS = (10.0, 100.0)  # logistic regression's C on unit embeddings; above its class count, the cosine scale
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# the gated weight's grid is finer at the small end: there a photo of an unseen landmark that the
# gate takes for a known one pays least, which is what decides the choice on mixed folds
GATED_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
PLATEAU = 0.01  # mAP@10 within this of the best counts as the best

# (training photo indices) -> a function from feature rows to the run's embedding, fitted on those photos
HeadForFold = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]


@dataclass
class FusionChoice:
    strength: float
    weight: float
    scores: PoolScores  # closed folds, fused at the chosen strength and weight
    grid: dict  # "C=10 w=0.5" -> pooled mAP@10, for the run's summary


@dataclass
class FoldPool:
    """A fold's pool as the fusion sees it: its queries' cosine candidates and the posteriors of
    every pool photo under the classifier fitted on the fold's training photos."""

    fold: Fold
    queries: np.ndarray
    cosine: np.ndarray  # (queries, candidates), best first
    candidates: np.ndarray  # pool indices
    vectors: np.ndarray  # the fold's embedding of its pool photos
    embed: Callable[[np.ndarray], np.ndarray]

    def fused_scores(self, labels: np.ndarray, bonus: np.ndarray) -> PoolScores:
        ranking = rescore(self.cosine, self.candidates, bonus, MAP_K)[1]
        return score_ranked(ranking, self.queries, labels[self.fold.pool], self.fold.unseen)


def _fold_pools(features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], head_for: HeadForFold, progress: bool):
    """Each pool query's FUSION_CANDIDATES nearest photos by cosine, found once per fold, in blocks."""
    pools = []
    for fold in steps(folds, "label fusion: candidates", unit="fold", enabled=progress):
        embed = head_for(fold.train)
        vectors = embed(features[fold.pool])
        queries = pool_queries(labels[fold.pool])
        cosine, candidates = neighbours_among(vectors, FUSION_CANDIDATES, queries)
        pools.append(FoldPool(fold, queries, cosine, candidates, vectors, embed))
    return pools


def _fold_classifier(pool: FoldPool, features, labels, strength: float) -> LabelClassifier:
    train = pool.fold.train
    return fit_label_classifier(Rows(features, train, pool.embed), labels[train], strength)


def _posteriors_by_strength(pool: FoldPool, features, labels, device=None) -> dict:
    """The posteriors of the pool's photos under the fold's classifier at each of STRENGTHS. Class
    prototypes (past LOGISTIC_MOST_CLASSES) are fitted once and one product serves every strength:
    the logits only scale. Logistic regression is fitted at each."""
    first = _fold_classifier(pool, features, labels, STRENGTHS[0])
    if first.sparse:
        return first.posteriors_at(pool.vectors, STRENGTHS, device)
    rest = {c: _fold_classifier(pool, features, labels, c) for c in STRENGTHS[1:]}
    return {c: classifier.posteriors(pool.vectors) for c, classifier in ({STRENGTHS[0]: first} | rest).items()}


def _agreement(pool: FoldPool, rows: np.ndarray) -> np.ndarray:
    return posterior_agreement(rows[pool.queries], rows, pool.candidates)


def choose_fusion(
    features: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Fold],
    head_for: HeadForFold,
    progress: bool = True,
    device=None,
) -> FusionChoice:
    """Strength and weight of the label fusion, chosen on closed folds (see the module); every
    strength and weight re-orders the same candidate lists (the whole pool, at today's sizes).
    `device`: where the class prototypes' products are made (CUDA; else numpy)."""
    pools = _fold_pools(features, labels, folds, head_for, progress)
    parts: dict[tuple[float, float], list[PoolScores]] = {(c, w): [] for c in STRENGTHS for w in WEIGHTS}
    for pool in steps(pools, "label fusion: strengths and weights", unit="fold", enabled=progress):
        for strength, posteriors in _posteriors_by_strength(pool, features, labels, device).items():
            agreement = _agreement(pool, posteriors)
            for weight in WEIGHTS:
                parts[(strength, weight)].append(pool.fused_scores(labels, weight * agreement))
    scores = {key: PoolScores.concat(p) for key, p in parts.items()}
    # judged on queries of training landmarks only: the fusion is for them (closed folds hold no others)
    quality = {key: float(s.ap[~s.unseen].mean()) if (~s.unseen).any() else float("-inf") for key, s in scores.items()}
    best_strength = max(STRENGTHS, key=lambda c: max(quality[(c, w)] for w in WEIGHTS))
    best = max(quality[(best_strength, w)] for w in WEIGHTS)
    weight = min(w for w in WEIGHTS if quality[(best_strength, w)] >= best - PLATEAU)
    grid = {f"C={c:g} w={w:g}": round(q, 4) for (c, w), q in quality.items()}
    return FusionChoice(best_strength, weight, scores[(best_strength, weight)], grid)


@dataclass
class GateChoice:
    calibration: dict  # the top-posterior test for `--landmarks auto` ({} without held-out landmarks)
    gate: KnownGate | None  # None: no fold holds landmarks out, or its photos are all of one kind
    weight: float  # the gated weight (0: fusing did not pay on mixed folds)
    summary: dict  # for the run's summary


def _does_not_lose_unseen(scores: PoolScores, base: PoolScores) -> bool:
    """On queries of held-out landmarks, the mean mAP@10 within PLATEAU of no fusion: a gate is
    never perfect, so a photo of an unseen landmark taken for a known one pays a little; more
    than a point is a loss however much the others gain."""
    if not scores.unseen.any():
        return True
    return float((scores.ap[scores.unseen] - base.ap[base.unseen]).mean()) >= -PLATEAU


def _rounded(means: dict) -> dict:
    return {name.removesuffix(f"_map@{MAP_K}"): round(v, 4) for name, v in means.items() if name.endswith(f"@{MAP_K}")}


def choose_gate(
    features: np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Fold],
    head_for: HeadForFold,
    strength: float,
    progress: bool = True,
    device=None,
) -> GateChoice:
    """Calibration, gate and gated weight on the mixed folds (see the module)."""
    pools = _fold_pools(features, labels, [f for f in folds if f.unseen.any()], head_for, progress)
    if not pools:
        return GateChoice({}, None, 0.0, {})
    classifiers, posteriors = [], []  # at 81k landmarks each pool's posteriors are minutes: inside the progress
    for pool in steps(pools, "label fusion: the gate's classifiers", unit="fold", enabled=progress):
        classifiers.append(_fold_classifier(pool, features, labels, strength))
        posteriors.append(classifiers[-1].posteriors(pool.vectors, device=device))
    signs = [c.gate_features(pool.vectors, p) for c, pool, p in zip(classifiers, pools, posteriors)]
    known = [~pool.fold.unseen for pool in pools]
    calibration = calibrate_known(np.concatenate([top_posterior(p) for p in posteriors]), np.concatenate(known))
    gate = fit_known_gate(np.concatenate(signs), np.concatenate(known))
    if gate is None:
        return GateChoice(calibration, None, 0.0, {})
    scores: dict[float, list[PoolScores]] = {w: [] for w in GATED_WEIGHTS}
    for i, pool in enumerate(pools):
        others = [j for j in range(len(pools)) if j != i] or [i]  # one fold alone: its own gate
        fold_gate = fit_known_gate(
            np.concatenate([signs[j] for j in others]), np.concatenate([known[j] for j in others])
        )
        chance = (fold_gate or gate).probability(signs[i])
        agreement = _agreement(pool, weighted_posteriors(posteriors[i], 1.0, chance))
        for weight in GATED_WEIGHTS:
            scores[weight].append(pool.fused_scores(labels, weight * agreement))
    pooled = {w: PoolScores.concat(parts) for w, parts in scores.items()}
    base = pooled[0.0]
    allowed = [w for w in GATED_WEIGHTS if _does_not_lose_unseen(pooled[w], base)]
    quality = {w: float(pooled[w].ap.mean()) for w in GATED_WEIGHTS}
    weight = max(allowed, key=lambda w: quality[w])  # what a larger weight costs unseen landmarks is measured here
    summary = {
        "gate_auc": round(gate.auc, 4),
        "weight": weight,
        "grid_map@10": {f"w={w:g}": {"all": round(quality[w], 4)} | _rounded(pooled[w].means()) for w in GATED_WEIGHTS},
        "validation": {"without": base.means(), "with": pooled[weight].means(), "queries": len(base.ap)},
    }
    return GateChoice(calibration, gate, weight, summary)


def fit_label_fusion(
    features: np.ndarray,
    labels: np.ndarray,
    closed_folds: Sequence[Fold],
    mixed_folds: Sequence[Fold],
    head_for: HeadForFold,
    final_embedding: Callable[[np.ndarray], np.ndarray],
    baseline: PoolScores,
    seed: int = 0,
    progress: bool = True,
    device=None,
) -> tuple[dict, LabelClassifier]:
    """A run's label classifier: strength and weight chosen on `closed_folds`, calibrated and
    gated on `mixed_folds`, fitted on every photo's `final_embedding`; and for the run's summary,
    what the folds said of it against `baseline` (the pretrained backbone on the closed folds)."""
    choice = choose_fusion(features, labels, closed_folds, head_for, progress, device)
    gated = choose_gate(features, labels, mixed_folds, head_for, choice.strength, progress, device)
    classifier = fit_label_classifier(Rows(features, embed=final_embedding), labels, choice.strength)
    classifier.weight, classifier.calibration = choice.weight, gated.calibration
    classifier.gate, classifier.gated_weight = gated.gate, gated.weight
    verdict = compare(choice.scores, baseline, seed=seed)
    summary = {
        "classifier": classifier.kind,  # logistic regression, or prototypes above LOGISTIC_MOST_CLASSES
        "strength": choice.strength,
        "weight": choice.weight,
        "calibration": gated.calibration,
        "grid_map@10": choice.grid,
        "validation": {"seen": verdict["seen"]},  # queries of training landmarks, the fusion included
        "gated": gated.summary,  # mixed sets: the fusion per query, by P(known)
    }
    return summary, classifier
