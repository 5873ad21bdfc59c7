"""Fuse several models' embeddings into one retrieval embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from competition.retrieval.vectors import ROWS_AT_ONCE, l2_normalize


def fuse_concat(embeddings: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Concatenate L2-normalised embeddings scaled by sqrt(weight).

    The cosine of the result is then the weighted mean of each model's cosine, so the
    weights mean what a user expects whatever each model's embedding size.
    """
    weights = list(weights) if weights is not None else [1.0] * len(embeddings)
    if len(weights) != len(embeddings):
        raise ValueError(f"{len(weights)} weights for {len(embeddings)} models")
    if len({len(e) for e in embeddings}) != 1:
        raise ValueError(f"embeddings of {sorted({len(e) for e in embeddings})} photos: one count, at least one model")
    # a block of rows at a time (each row is its own): a 760k gallery's whole copies were 4-8 GB each
    fused = np.empty((len(embeddings[0]), sum(e.shape[1] for e in embeddings)), np.float32)
    for start in range(0, len(fused), ROWS_AT_ONCE):
        rows = slice(start, start + ROWS_AT_ONCE)
        parts = [l2_normalize(e[rows]) * np.sqrt(w) for e, w in zip(embeddings, weights)]
        fused[rows] = l2_normalize(np.concatenate(parts, axis=1))
    return fused
