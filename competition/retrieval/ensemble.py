"""Fuse several models' embeddings into one retrieval embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from competition.retrieval.vectors import l2_normalize


def fuse_concat(embeddings: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Concatenate L2-normalised embeddings scaled by sqrt(weight).

    The cosine of the result is then the weighted mean of each model's cosine, so the
    weights mean what a user expects whatever each model's embedding size.
    """
    weights = list(weights) if weights is not None else [1.0] * len(embeddings)
    if len(weights) != len(embeddings):
        raise ValueError(f"{len(weights)} weights for {len(embeddings)} models")
    parts = [l2_normalize(e) * np.sqrt(w) for e, w in zip(embeddings, weights)]
    return l2_normalize(np.concatenate(parts, axis=1))
