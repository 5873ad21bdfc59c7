"""Embedding rows as every retrieval step takes them: float32, contiguous, unit length; and
`Rows`, a large matrix's rows read a block at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))  # np.linalg.norm's sum, without its copy of x
    return x / np.maximum(norms, 1e-12)


ROWS_AT_ONCE = 16_384  # a block of rows: 1280-d float64 sums of it stay near 170 MB


@dataclass(frozen=True)
class Rows:
    """Rows `index` of `matrix` (all when None), each passed through `embed` (when given) as
    float32, a block at a time: what a stage that reduces over photos (class means, a
    covariance) reads instead of a copy of them. At Google Landmarks size a fold's training
    photos alone are 6 GB of float32 at 1280-d, and their embedding as much again."""

    matrix: np.ndarray
    index: np.ndarray | None = None
    embed: Callable[[np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.matrix) if self.index is None else len(self.index)

    def take(self, positions: np.ndarray | slice) -> np.ndarray:
        """Rows at `positions` (of these rows, not of the matrix), embedded, float32."""
        picked = self.matrix[positions] if self.index is None else self.matrix[self.index[positions]]
        rows = np.asarray(picked, dtype=np.float32)
        return rows if self.embed is None else np.asarray(self.embed(rows), dtype=np.float32)

    def normalized(self) -> Rows:
        """These rows at unit length."""
        embed = self.embed
        return Rows(self.matrix, self.index, lambda rows: l2_normalize(embed(rows) if embed else rows))

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(position of its first row, rows) for each block of ROWS_AT_ONCE rows, in order."""
        for start in range(0, len(self), ROWS_AT_ONCE):
            yield start, self.take(slice(start, start + ROWS_AT_ONCE))

    def whole(self) -> np.ndarray:
        """Every row at once (a stage that needs them all, e.g. logistic regression's fit)."""
        if self.embed is None and self.index is None and self.matrix.dtype == np.float32:
            return self.matrix
        out = None
        for start, block in self.blocks():
            if out is None:
                out = np.empty((len(self), block.shape[1]), np.float32)
            out[start : start + len(block)] = block
        return out if out is not None else self.take(slice(0, 0))


def as_rows(vectors: np.ndarray | Rows) -> Rows:
    return vectors if isinstance(vectors, Rows) else Rows(vectors)


def class_sums(rows: np.ndarray | Rows, owners: np.ndarray, classes: int) -> np.ndarray:
    """float64 sum of the rows of each class (`owners[i]`: row i's class), one sparse product a
    block of rows at a time over the classes the block holds (a loop over 81k landmarks would
    compare every row with every one; a product over all of them, 0.8 GB a block, would add zeros)."""
    rows = as_rows(rows)
    sums = None
    for start, block in rows.blocks():
        present, mine = np.unique(owners[start : start + len(block)], return_inverse=True)
        one_hot = sparse.csr_matrix((np.ones(len(mine)), (mine, np.arange(len(mine)))), (len(present), len(mine)))
        if sums is None:
            sums = np.zeros((classes, block.shape[1]))
        sums[present] += one_hot @ block.astype(np.float64)
    return sums if sums is not None else np.zeros((classes, rows.take(slice(0, 0)).shape[1]))


def float16_if_exact(matrix: np.ndarray) -> np.ndarray:
    """`matrix` as float16 when every number is one already (rows read from the feature cache or
    a features folder, which store float16): half the memory, nothing lost; else unchanged."""
    if matrix.dtype == np.float16:
        return matrix
    out = np.empty(matrix.shape, np.float16)
    for start in range(0, len(matrix), ROWS_AT_ONCE):
        block = matrix[start : start + ROWS_AT_ONCE]
        out[start : start + len(block)] = block
        if not np.array_equal(out[start : start + len(block)], block):
            return matrix
    return out
