"""Class posteriors of the training landmarks, fused into the ranking.

When a query shows a landmark of `train/`, the training labels say more than any distance:
a classifier on the embedding names the landmark of the query and of every gallery photo.
The ranking then uses

    score(q, g) = cosine(q, g) + weight * gate(q) * gate(g) * P(q) . P(g)

where P(x) is the vector of class posteriors: a gallery photo of the class the query is
classified into moves up by up to `weight`; photos of other landmarks keep their cosine
order. The gate is 1 when every query is known to show a training landmark (`--landmarks
known`), and P(known | photo) on a mixed set (retrieval/landmarks.KnownGate), so a photo of
a landmark training never saw keeps its cosine ranking. The classifier is a multinomial
logistic regression (scikit-learn) on L2-normalised embeddings, fitted in seconds; its
strength and the weights are chosen on validation folds (train/label_fusion.py).

The fusion re-orders each query's top candidates by cosine (`rescore`), never an n x n
matrix or appended vectors: O(queries x candidates) at any gallery size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from competition.retrieval.landmarks import KnownGate
from competition.retrieval.vectors import l2_normalize


@dataclass
class LabelClassifier:
    """Linear softmax over the training landmarks, plus how much its posteriors count."""

    classes: list[str]
    coef: np.ndarray  # (classes, dim)
    intercept: np.ndarray  # (classes,)
    weight: float = 0.0  # of P(q).P(g) in the fused score
    strength: float = 10.0  # logistic regression's C (inverse regularisation)
    # Max-posterior threshold that tells a training landmark's photo from another's, with its true and
    # false positive rates on held-out landmarks: what `--landmarks auto` estimates the query mix from.
    calibration: dict = field(default_factory=dict)
    # each landmark's mean training embedding (L2-normalised), in `classes` order: a sign of a known landmark
    prototypes: np.ndarray | None = None
    gate: KnownGate | None = None  # P(known | photo), fitted on held-out photos; None: no mixed folds
    gated_weight: float = 0.0  # the fusion weight on a mixed set, scaled per pair by the gate

    def posteriors(self, vectors: np.ndarray) -> np.ndarray:
        logits = l2_normalize(vectors) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return (odds / odds.sum(axis=1, keepdims=True)).astype(np.float32)

    def gate_features(self, vectors: np.ndarray, posteriors: np.ndarray | None = None) -> np.ndarray:
        """(top posterior, cosine to the nearest class prototype) of each photo: what the gate reads."""
        posteriors = self.posteriors(vectors) if posteriors is None else posteriors
        nearest = (l2_normalize(vectors) @ self.prototypes.T).max(axis=1)
        return np.stack([posteriors.max(axis=1), nearest], axis=1).astype(np.float32)

    def known_probability(self, vectors: np.ndarray, posteriors: np.ndarray | None = None) -> np.ndarray:
        return self.gate.probability(self.gate_features(vectors, posteriors))

    def to_payload(self) -> dict:
        """Tensors, plain containers and numbers: what a checkpoint loaded with weights_only may hold."""
        import torch

        return {
            "classes": list(self.classes),
            "coef": torch.from_numpy(np.ascontiguousarray(self.coef, np.float32)),
            "intercept": torch.from_numpy(np.ascontiguousarray(self.intercept, np.float32)),
            "weight": float(self.weight),
            "strength": float(self.strength),
            "calibration": dict(self.calibration),
            "prototypes": None if self.prototypes is None else torch.from_numpy(self.prototypes.astype(np.float32)),
            "gate": None if self.gate is None else self.gate.to_payload(),
            "gated_weight": float(self.gated_weight),
        }

    @classmethod
    def from_payload(cls, payload: dict) -> "LabelClassifier":
        return cls(
            list(payload["classes"]),
            np.asarray(payload["coef"], dtype=np.float32),  # a CPU tensor or a list
            np.asarray(payload["intercept"], dtype=np.float32),
            float(payload.get("weight", 0.0)),
            float(payload.get("strength", 10.0)),
            dict(payload.get("calibration") or {}),
            # runs trained before the gate: no prototypes, no gate, so no fusion on mixed sets
            None if payload.get("prototypes") is None else np.asarray(payload["prototypes"], dtype=np.float32),
            KnownGate.from_payload(payload.get("gate")),
            float(payload.get("gated_weight", 0.0)),
        )


def fit_label_classifier(vectors: np.ndarray, labels, strength: float = 10.0) -> LabelClassifier:
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=object).astype(str)
    vectors = l2_normalize(vectors)
    model = LogisticRegression(C=strength, max_iter=5000).fit(vectors, labels)
    classes = [str(c) for c in model.classes_]
    coef, intercept = model.coef_, model.intercept_
    if len(classes) == 2:  # scikit-learn keeps one logit z for two classes: softmax(-z/2, z/2) = sigmoid(z)
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    prototypes = l2_normalize(np.stack([vectors[labels == c].mean(axis=0) for c in classes]))
    return LabelClassifier(classes, coef, intercept, strength=strength, prototypes=prototypes)


def weighted_posteriors(posteriors: np.ndarray, weight: float, gate: np.ndarray | None = None) -> np.ndarray:
    """Rows whose inner product is the fusion term weight * gate(a) * gate(b) * P(a).P(b)."""
    scale = np.sqrt(np.float32(weight)) * (np.ones(len(posteriors), np.float32) if gate is None else gate)
    return (posteriors * scale[:, None]).astype(np.float32)


def posterior_agreement(query_rows: np.ndarray, gallery_rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """query_rows[i] . gallery_rows[candidates[i, j]] for each query and candidate, in blocks of ~64 MB."""
    block = max(1, (1 << 24) // max(1, candidates.shape[1] * gallery_rows.shape[1]))
    agreement = np.empty(candidates.shape, np.float32)
    for start in range(0, len(query_rows), block):
        rows = slice(start, start + block)
        agreement[rows] = np.einsum("qc,qkc->qk", query_rows[rows], gallery_rows[candidates[rows]])
    return agreement


def rescore(scores: np.ndarray, candidates: np.ndarray, bonus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's candidates re-ordered by score + bonus (ties keep their order): the top k."""
    fused = scores + bonus
    order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(fused, order, axis=1), np.take_along_axis(candidates, order, axis=1)
