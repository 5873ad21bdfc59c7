"""The frozen backbone's pooled features of a run's photos: one matrix, a row a photo.

At Google Landmarks size it is a run's largest object (1.58M photos x 1280-d: 8 GB of
float32), so it is held once: as float16 when its numbers are float16 already (the feature
cache and a features folder store them so), and handed out as row indices over it
(retrieval/vectors.Rows) rather than as copies of a fold's photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.data.discover import ImageRecord
from competition.retrieval.vectors import Rows, float16_if_exact


@dataclass(frozen=True)
class PhotoFeatures:
    matrix: np.ndarray  # float16 or float32, a row per readable photo
    row_of: dict[Path, int]

    @classmethod
    def of(cls, records: list[ImageRecord], vectors: np.ndarray, unreadable: set[Path]) -> PhotoFeatures:
        """The rows of `vectors` (one per record) of the photos that were read."""
        kept = [i for i, r in enumerate(records) if r.path not in unreadable]
        matrix = vectors if len(kept) == len(records) else vectors[kept]
        return cls(float16_if_exact(matrix), {records[i].path: row for row, i in enumerate(kept)})

    def __len__(self) -> int:
        return len(self.matrix)

    def __contains__(self, path: Path) -> bool:
        return path in self.row_of

    def rows(self, records: list[ImageRecord]) -> tuple[Rows, np.ndarray]:
        """The rows of the records that were read, and their labels."""
        kept = [r for r in records if r.path in self.row_of]
        index = np.array([self.row_of[r.path] for r in kept], dtype=np.int64)
        return Rows(self.matrix, index), np.array([r.label for r in kept], dtype=object)

    def stacked(self, records: list[ImageRecord]) -> np.ndarray:
        """Every record's row (each must have been read), in the matrix's type: the matrix itself
        when they are all of it in order (the run's photos, usually), else a copy."""
        index = np.array([self.row_of[r.path] for r in records], dtype=np.int64)
        if len(index) == len(self.matrix) and np.array_equal(index, np.arange(len(index))):
            return self.matrix
        return self.matrix[index]
