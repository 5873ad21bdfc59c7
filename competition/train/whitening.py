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

from competition.errors import CompeteError
from competition.retrieval.vectors import ROWS_AT_ONCE, Rows, as_rows, class_sums, l2_normalize

OFFSETS_SAMPLE = 200_000  # offsets the shrunk covariance is estimated from: a seeded sample past it


def within_class_offsets(features: np.ndarray | Rows, labels: np.ndarray, most: int = OFFSETS_SAMPLE) -> np.ndarray:
    """Each feature minus the mean of its class (float64), in class order; classes of one photo
    carry no offset. Past `most` offsets, a seeded sample of them (class means from every photo).
    Rows are read a block at a time: at 1.58M photos the means are one float64 block's work."""
    return _offsets_and_mean(as_rows(features), np.asarray(labels), most)[0]


def _offsets_and_mean(features: Rows, labels: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
    """within_class_offsets, and the mean of every row: both from one pass of class sums."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    means = class_sums(features, inverse, len(classes))
    mean = means.sum(axis=0) / max(len(features), 1)
    means /= counts[:, None]
    rows = np.flatnonzero(counts[inverse] > 1)
    rows = rows[np.argsort(inverse[rows], kind="stable")]
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(0).choice(rows, most, replace=False))
    offsets = features.take(rows).astype(np.float64)
    for start in range(0, len(rows), ROWS_AT_ONCE):  # in place: 200k offsets at 1280-d are 2 GB a copy
        block = slice(start, start + ROWS_AT_ONCE)
        offsets[block] -= means[inverse[rows[block]]]
    return offsets, mean


def fit_learned_whitening(
    features: np.ndarray | Rows, labels, power: float = 0.5
) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, matrix, shrinkage) such that (normalise(x) - mean) @ matrix is the whitened x."""
    offsets, mean = _offsets_and_mean(as_rows(features).normalized(), np.asarray(labels), OFFSETS_SAMPLE)
    if len(offsets) < 2:
        raise CompeteError("learned whitening needs a landmark with at least 2 training photos")
    eigenvalues, eigenvectors = _covariance_spectrum(offsets)
    shrinkage = ledoit_wolf_shrinkage(offsets, eigenvalues)
    # Ledoit-Wolf's (1 - s) S + s mu I has S's eigenvectors; every direction outside them has the eigenvalue s mu
    rest = shrinkage * float(eigenvalues.sum()) / offsets.shape[1]
    scale = np.power(np.maximum((1 - shrinkage) * eigenvalues + rest, 1e-12), -power / 2)
    rest_scale = np.power(max(rest, 1e-12), -power / 2)
    matrix = (eigenvectors * (scale - rest_scale)) @ eigenvectors.T + rest_scale * np.eye(len(eigenvectors))
    return mean.astype(np.float32), matrix.astype(np.float32), shrinkage


def _covariance_spectrum(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of S = offsets.T @ offsets / n. With fewer offsets than
    dimensions (a small competition: hundreds of photos, 1280-d) S has rank n, so its n
    directions come from the offsets' thin SVD, O(n^2 d), instead of an O(d^3) eigendecomposition."""
    samples = len(offsets)
    if samples >= offsets.shape[1]:
        return np.linalg.eigh(offsets.T @ offsets / samples)
    _, singular, right = np.linalg.svd(offsets, full_matrices=False)
    return singular**2 / samples, right.T


def ledoit_wolf_shrinkage(offsets: np.ndarray, eigenvalues: np.ndarray) -> float:
    """Ledoit-Wolf's shrinkage of S = offsets.T @ offsets / n towards mu I, mu = trace(S) / d: what
    scikit-learn's ledoit_wolf_shrinkage(assume_centered=True) returns, from S's eigenvalues and
    the offsets' norms. scikit-learn sums the entries of (X**2).T @ X**2, which is sum_i |x_i|^4:
    its way is a second d x d product over the rows and a copy of X**2 (at 200k offsets of
    1280-d, 40 s and 2 GB, a fit's peak); this way is O(n d)."""
    samples, dim = offsets.shape
    squared_norms = np.einsum("ij,ij->i", offsets, offsets)
    mu = float(squared_norms.sum()) / samples / dim
    frobenius = float(np.sum(eigenvalues**2))  # |S|_F^2
    delta = (frobenius - dim * mu**2) / dim
    beta = min((float(np.sum(squared_norms**2)) / samples - frobenius) / (dim * samples), delta)
    return 0.0 if beta == 0 else beta / delta


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
