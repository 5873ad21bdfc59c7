"""Fit a learned whitening (see models/projection.py) to labelled features, in closed form.

The within-landmark covariance is estimated from each photo's offset to its landmark's
mean. With a few hundred photos and a 1280-d feature it is singular, so it is shrunk
towards a scaled identity by Ledoit-Wolf's formula (the amount comes from the data,
nothing to tune). `power` 1 is full whitening; 0.5 shrinks the nuisance directions by
the square root only, the milder transform we keep as default for small training sets.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from competition.errors import CompeteError
from competition.retrieval.vectors import l2_normalize


def within_class_offsets(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each feature minus the mean of its class; classes of one photo carry no offset."""
    offsets = [
        features[labels == label] - features[labels == label].mean(axis=0)
        for label in np.unique(labels)
        if (labels == label).sum() > 1
    ]
    return np.concatenate(offsets) if offsets else np.zeros((0, features.shape[1]), features.dtype)


def fit_learned_whitening(features: np.ndarray, labels, power: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, matrix, shrinkage) such that (normalise(x) - mean) @ matrix is the whitened x."""
    features = l2_normalize(features).astype(np.float64)
    labels = np.asarray(labels)
    offsets = within_class_offsets(features, labels)
    if len(offsets) < 2:
        raise CompeteError("learned whitening needs a landmark with at least 2 training photos")
    estimate = LedoitWolf(assume_centered=True).fit(offsets)
    eigenvalues, eigenvectors = np.linalg.eigh(estimate.covariance_)
    scale = np.power(np.maximum(eigenvalues, 1e-12), -power / 2)
    matrix = (eigenvectors * scale) @ eigenvectors.T
    return features.mean(axis=0).astype(np.float32), matrix.astype(np.float32), float(estimate.shrinkage_)


def apply_learned_whitening(features: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """What LearnedWhitening does, on arrays (validation folds use it without a model)."""
    return (l2_normalize(features) - mean) @ matrix
