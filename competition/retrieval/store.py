"""An embedding store that grows in O(N): appended chunks, each written once.

A store is a folder of chunks: `<chunk>.vectors.npy` (float16 rows) and `<chunk>.keys.npy`
(the key of each row), the keys written last and atomically, so a chunk counts only once
it is whole. Writing N vectors writes each byte once (the old one-file cache rewrote
everything every 200 batches: O(N²) bytes); a kill loses at most the chunk in progress;
several processes (torchrun ranks, two submits) append to one store without clashing,
each chunk being named by its writer. Reading maps the vector files into memory
(numpy memmap) and indexes only the keys, so a 760k-photo store opens without loading
its vectors.

Rows are kept as float16 from the moment they are put (a fresh vector and a stored one are the
same numbers): half the disk and memory of float32, which decides whether GLDv2's 2.5M pooled
lite0 features (6.4 GB, not 12.8) fit beside a run in Kaggle's 20 GB working folder. float16's
relative rounding (5e-4 a number) moves a cosine by about 1e-5; a vector with a number past
float16's range stays float32.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from competition.errors import CompeteError, DiskFull
from competition.io import atomic_path, counted

log = logging.getLogger(__name__)

CHUNK_ROWS = 2048  # vectors per chunk: what a kill can lose, and the unit of a write
_FLOAT16_MOST = float(np.finfo(np.float16).max)
_counter = itertools.count()


class EmbeddingStore:
    """key -> vector, persisted in `folder` as appended chunks (in memory only when folder is None)."""

    def __init__(self, folder: str | Path | None, chunk_rows: int = CHUNK_ROWS):
        self.folder = Path(folder) if folder else None
        self.chunk_rows = chunk_rows
        self.where: dict[str, tuple[int, int]] = {}  # key -> (chunk, row)
        self.chunks: list[np.ndarray] = []
        self.pending: dict[str, np.ndarray] = {}
        self.reload()

    def reload(self) -> None:
        """Index every whole chunk on disk (other writers' included); a chunk without keys is skipped."""
        self.where, self.chunks = {}, []
        if not self.folder or not self.folder.is_dir():
            return
        for keys_file in sorted(self.folder.glob("*.keys.npy")):
            vectors_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".vectors.npy"))
            try:
                keys = np.load(keys_file, allow_pickle=False)
                vectors = np.load(vectors_file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                log.warning("%s: unreadable chunk, its vectors will be recomputed (%s)", keys_file, error)
                continue
            if len(keys) != len(vectors) or vectors.ndim != 2:
                log.warning("%s: keys and vectors disagree, chunk skipped", keys_file)
                continue
            chunk = len(self.chunks)
            self.chunks.append(vectors)
            self.where.update((str(key), (chunk, row)) for row, key in enumerate(keys.tolist()))

    def __contains__(self, key: str) -> bool:
        return key in self.pending or key in self.where

    def __len__(self) -> int:
        return len(self.where.keys() | self.pending.keys())

    def get(self, key: str) -> np.ndarray | None:
        if key in self.pending:
            return self.pending[key]
        if key in self.where:
            chunk, row = self.where[key]
            return np.asarray(self.chunks[chunk][row])
        return None

    def put(self, key: str, vector: np.ndarray) -> None:
        self.pending[key] = compact(vector)
        if len(self.pending) >= self.chunk_rows:
            self.flush()

    @property
    def dim(self) -> int:
        for vectors in [*self.pending.values(), *self.chunks]:
            return int(vectors.shape[-1])
        return 0

    def stack(self, keys: list[str], unreadable: Collection[str] = ()) -> np.ndarray:
        """Rows for `keys` in order. Only a key in `unreadable` (a photo that could not be read,
        reported as such) may be absent, and gets a zero vector: any other missing key is an error,
        never a silent zero that would rank as if it were a photo."""
        out = np.zeros((len(keys), self.dim), np.float32)
        absent = []
        for row, key in enumerate(keys):
            vector = self.get(key)
            if vector is not None:
                out[row] = vector
            elif key not in unreadable:
                absent.append(key.split("|", 1)[0])
        if absent:
            raise CompeteError(
                f"{counted(len(absent), 'photo')} with no vector in the embedding store {self.folder} "
                f"(first: {absent[0]}); nothing was written: re-run the same command, it embeds only what is missing"
            )
        return out

    def flush(self) -> None:
        """Write what is pending as one new chunk (vectors first, keys last: the chunk's commit)."""
        if not self.folder or not self.pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():x}-{os.getpid()}-{next(_counter)}"
        keys = list(self.pending)
        vectors = np.stack([self.pending[k] for k in keys])  # float32 if any row had to stay float32
        try:
            for suffix, array in ((".vectors.npy", vectors), (".keys.npy", np.array(keys))):
                with atomic_path(self.folder / f"{name}{suffix}") as tmp:
                    with open(tmp, "wb") as handle:
                        np.save(handle, array, allow_pickle=False)
        except DiskFull as error:
            raise DiskFull(
                f"disk full: cannot write the embedding cache {self.folder} ({len(self.where)} vectors saved "
                f"there, {len(self.pending)} lost); free some space and re-run the same command: it resumes "
                "from the saved ones"
            ) from error
        chunk = len(self.chunks)
        self.chunks.append(vectors)
        self.where.update((key, (chunk, row)) for row, key in enumerate(keys))
        self.pending = {}


def compact(vector: np.ndarray) -> np.ndarray:
    """The vector as the store keeps it: float16, unless a number would overflow it."""
    vector = np.asarray(vector, dtype=np.float32)
    fits = not vector.size or float(np.abs(vector).max()) < _FLOAT16_MOST
    return vector.astype(np.float16) if fits else vector
