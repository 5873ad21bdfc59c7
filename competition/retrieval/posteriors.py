"""Class posteriors of the training landmarks, fused into the ranking.

When a query shows a landmark of `train/`, the training labels say more than any distance:
a classifier on the embedding names the landmark of the query and of every gallery photo.
The ranking then uses

    score(q, g) = cosine(q, g) + weight * P(q) . P(g)

where P(x) is the vector of class posteriors: a gallery photo of the class the query is
classified into moves up by up to `weight`; photos of other landmarks keep their cosine
order. The classifier is a multinomial logistic regression (scikit-learn) on L2-normalised
embeddings, fitted in seconds; its strength and the weight are chosen on closed-set
validation folds (train/label_fusion.py).

`fuse_for_search` writes the fused score as an inner product of longer vectors, so faiss
(any index) ranks by it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from competition.retrieval.search import l2_normalize


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

    def posteriors(self, vectors: np.ndarray) -> np.ndarray:
        logits = l2_normalize(vectors) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return (odds / odds.sum(axis=1, keepdims=True)).astype(np.float32)

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
        )


def fit_label_classifier(vectors: np.ndarray, labels, strength: float = 10.0) -> LabelClassifier:
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=object)
    model = LogisticRegression(C=strength, max_iter=5000).fit(l2_normalize(vectors), labels.astype(str))
    return LabelClassifier([str(c) for c in model.classes_], model.coef_, model.intercept_, strength=strength)


def fused_similarity(similarity: np.ndarray, query_posteriors: np.ndarray, gallery_posteriors: np.ndarray, weight):
    """cosine + weight * P(q).P(g), as a dense matrix (validation pools)."""
    return similarity + weight * query_posteriors @ gallery_posteriors.T


def fuse_for_search(
    queries: np.ndarray, gallery: np.ndarray, query_posteriors: np.ndarray, gallery_posteriors: np.ndarray, weight
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors whose cosine ranks each query's gallery by cosine(q, g) + weight * P(q).P(g).

    q' = [q, sqrt(w) P(q), 0, a_q] and g' = [g, sqrt(w) P(g), b_g, 0], with the padding a_q,
    b_g giving every vector the norm sqrt(1 + w): then q'.g' is the fused score and all norms
    are equal, so the search's own L2 normalisation keeps the order."""
    queries, gallery = l2_normalize(queries), l2_normalize(gallery)
    root = np.sqrt(weight, dtype=np.float32)
    total = 1.0 + weight

    def extend(vectors, posteriors, pad_column):
        scaled = root * posteriors.astype(np.float32)
        pad = np.sqrt(np.clip(total - 1.0 - (scaled**2).sum(axis=1), 0, None))
        pads = np.zeros((len(vectors), 2), np.float32)
        pads[:, pad_column] = pad
        return np.concatenate([vectors, scaled, pads], axis=1)

    return extend(queries, query_posteriors, 1), extend(gallery, gallery_posteriors, 0)
