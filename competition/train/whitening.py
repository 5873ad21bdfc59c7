"""Fit a learned whitening (see models/projection.py) to labelled features, in closed form.

The within-landmark covariance is estimated from each photo's offset to its landmark's
mean. With a few hundred photos and a 1280-d feature it is singular, so it is shrunk
towards a scaled identity by Ledoit-Wolf's formula (the amount comes from the data,
nothing to tune). `power` 1 is full whitening; 0.5 shrinks the nuisance directions by
the square root only, the milder transform we keep as default for small training sets.
Class means come from a block of photos at a time (retrieval/vectors.class_sums); the covariance
from at most OFFSETS_SAMPLE offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage

from competition.errors import CompeteError
from competition.retrieval.vectors import ROWS_AT_ONCE, Rows, as_rows, class_sums, l2_normalize

OFFSETS_SAMPLE = 200_000  # offsets the shrunk covariance is estimated from: a seeded sample past it


def within_class_offsets(features: np.ndarray | Rows, labels: np.ndarray, most: int = OFFSETS_SAMPLE) -> np.ndarray:
    """Each feature minus the mean of its class (float64), in class order; classes of one photo
    carry no offset. Past `most` offsets, a seeded sample of them (class means from every photo).
    Rows are read a block at a time: at 1.58M photos the means are one float64 block's work."""
    features = as_rows(features)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    means = class_sums(features, inverse, len(classes))
    means /= counts[:, None]
    rows = np.flatnonzero(counts[inverse] > 1)
    rows = rows[np.argsort(inverse[rows], kind="stable")]
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(0).choice(rows, most, replace=False))
    offsets = features.take(rows).astype(np.float64)
    for start in range(0, len(rows), ROWS_AT_ONCE):  # in place: 200k offsets at 1280-d are 2 GB a copy
        block = slice(start, start + ROWS_AT_ONCE)
        offsets[block] -= means[inverse[rows[block]]]
    return offsets


def fit_learned_whitening(
    features: np.ndarray | Rows, labels, power: float = 0.5
) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, matrix, shrinkage) such that (normalise(x) - mean) @ matrix is the whitened x."""
    unit = as_rows(features).normalized()
    offsets = within_class_offsets(unit, np.asarray(labels))
    if len(offsets) < 2:
        raise CompeteError("learned whitening needs a landmark with at least 2 training photos")
    shrinkage = float(ledoit_wolf_shrinkage(offsets, assume_centered=True))
    eigenvalues, eigenvectors, rest = _shrunk_spectrum(offsets, shrinkage)
    scale = np.power(np.maximum(eigenvalues, 1e-12), -power / 2)
    rest_scale = np.power(max(rest, 1e-12), -power / 2)
    # every direction outside the eigenvectors has the eigenvalue `rest`
    matrix = (eigenvectors * (scale - rest_scale)) @ eigenvectors.T + rest_scale * np.eye(len(eigenvectors))
    total = sum(block.sum(axis=0, dtype=np.float64) for _, block in unit.blocks())
    return (total / len(unit)).astype(np.float32), matrix.astype(np.float32), shrinkage


def _shrunk_spectrum(offsets: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Eigenvalues and eigenvectors of Ledoit-Wolf's shrunk covariance (1 - s) S + s mu I, and
    the eigenvalue of every direction they leave out. With fewer offsets than dimensions (a
    small competition: hundreds of photos, 1280-d) S has rank n, so the n directions come from
    the offsets' thin SVD, O(n^2 d), instead of an O(d^3) eigendecomposition: same matrix."""
    samples, dim = offsets.shape
    mu = float(np.einsum("ij,ij->", offsets, offsets)) / samples / dim  # trace(S) / d
    floor = shrinkage * mu
    if samples >= dim:
        covariance = (1 - shrinkage) * (offsets.T @ offsets) / samples + floor * np.eye(dim)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        return eigenvalues, eigenvectors, floor
    _, singular, right = np.linalg.svd(offsets, full_matrices=False)
    return (1 - shrinkage) * singular**2 / samples + floor, right.T, floor


def apply_learned_whitening(features: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """What LearnedWhitening does, on arrays (validation folds use it without a model)."""
    return (l2_normalize(features) - mean) @ matrix


@dataclass(frozen=True)
class FittedWhitening:
    """A learned whitening fitted to labelled rows, applied as a function of rows (a fold's head)."""

    mean: np.ndarray
    matrix: np.ndarray
    shrinkage: float

    @classmethod
    def fit(cls, features: np.ndarray | Rows, labels, power: float = 0.5) -> FittedWhitening:
        return cls(*fit_learned_whitening(features, labels, power))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return apply_learned_whitening(vectors, self.mean, self.matrix)
