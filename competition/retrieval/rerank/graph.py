"""Nearest-neighbour graphs that re-ranking walks on: each photo's K most similar others, never
an n x n matrix.

A graph holds each photo's K best others (similarities best first, their indices) and its lowest
similarity to any photo of the set (k-reciprocal re-ranking divides a photo's distances by its
largest, as its authors' code does). The gallery's graph is built once and kept on disk, keyed by
the vectors' content: another submit on the same gallery (other queries, other re-ranking
settings) reads it. A query + gallery graph merges it with the queries' own searches, so the
joint graph is exactly the one a search over all photos together would give.

Exact search unless IVF is faster (retrieval/search.resolve_index: a large set searched by few
rows) and the user did not ask for exact search: a gallery's own graph, which searches every
photo of it, is always exact.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from competition.io import atomic_path
from competition.retrieval.search import build_index, resolve_index, search_index

log = logging.getLogger(__name__)

GRAPH_K = 32  # neighbours a gallery graph keeps at least: re-ranking settings up to it share one cached graph


@dataclass
class Neighbours:
    """Each photo's best others by the rows' inner products (the photo itself left out)."""

    similarities: np.ndarray  # (n, K) float32, best first
    indices: np.ndarray  # (n, K) int64
    lowest: np.ndarray  # (n,) each photo's least similarity to any photo of the set

    @property
    def width(self) -> int:
        return self.indices.shape[1]

    def first(self, k: int) -> Neighbours:
        return Neighbours(self.similarities[:, :k], self.indices[:, :k], self.lowest)


def graph_kind(asked: str, photos: int, rows: int) -> str:
    """How `rows` search a set of `photos` for a graph: exact unless the user did not ask for exact
    search and IVF is faster for that many rows (`auto`'s rule, whatever index the final search uses)."""
    return "exact" if asked == "exact" else resolve_index("auto", photos, rows)


def nearest(
    rows: np.ndarray, database: np.ndarray, k: int, kind: str = "exact", same: bool = False, nprobe: int = 0
) -> Neighbours:
    """Each row's top-k of `database` by inner product (rows as given); `same`: rows are the
    database, and a row is never its own neighbour. An IVF index probes `nprobe` cells (0: the
    final search's default); rows it found too few for are searched exactly."""
    k = min(k, len(database) - int(same))
    if k <= 0:  # nobody else: the photo's only similarity is to itself
        return Neighbours(np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64), np.ones(len(rows)))
    index = build_index(database, kind, k=k + int(same), nprobe=nprobe, normalize=False)
    similarities, indices = search_index(index, rows, k + int(same))
    short = np.flatnonzero((indices < 0).any(axis=1))
    if len(short) and kind != "exact":
        exact = build_index(database, "exact", use_gpu=False, normalize=False)
        similarities[short], indices[short] = search_index(exact, rows[short], k + int(same))
    if same:  # drop the row itself, or the last when a tie hid it
        itself = indices == np.arange(len(rows))[:, None]
        itself[~itself.any(axis=1), -1] = True
        similarities = similarities[~itself].reshape(len(rows), k)
        indices = indices[~itself].reshape(len(rows), k)
    lowest = -search_index(index, -np.asarray(rows, np.float32), 1)[0][:, 0]  # the farthest: the best of -row
    return Neighbours(similarities, indices.astype(np.int64), np.minimum(lowest, similarities.min(axis=1, initial=1)))


def merged(first: Neighbours, second: Neighbours, offset: int, k: int) -> Neighbours:
    """Each photo's k best of two neighbour lists of it (the second's indices shifted by
    `offset`); equal similarities: the lower index first."""
    similarities = np.concatenate([first.similarities, second.similarities], axis=1)
    indices = np.concatenate([first.indices, second.indices + offset], axis=1)
    order = np.lexsort((indices, -similarities), axis=1)[:, :k]
    return Neighbours(
        np.take_along_axis(similarities, order, axis=1),
        np.take_along_axis(indices, order, axis=1),
        np.minimum(first.lowest, second.lowest),
    )


def gallery_graph(
    gallery: np.ndarray, k: int, kind: str, cache_dir: str | Path | None = None, nprobe: int = 0
) -> Neighbours:
    """The gallery's own graph (at least GRAPH_K wide), read from `cache_dir` when this gallery's
    was built before."""
    gallery = np.ascontiguousarray(gallery, np.float32)
    width = max(k, GRAPH_K)
    path = None
    if cache_dir is not None:
        key = hashlib.blake2b(gallery.data, digest_size=16).hexdigest()
        search = kind if kind == "exact" else f"{kind}{nprobe or ''}"
        path = Path(cache_dir) / f"gallery-{key}-{len(gallery)}x{gallery.shape[1]}-{search}.npz"
        if (saved := _read(path)) is not None and saved.width >= min(k, len(gallery) - 1):
            log.info("gallery graph read from %s", path)
            return saved
    graph = nearest(gallery, gallery, width, kind, same=True, nprobe=nprobe)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(file, similarities=graph.similarities, indices=graph.indices.astype(np.int32), lowest=graph.lowest)
    return graph


def _read(path: Path) -> Neighbours | None:
    """A cached graph, or None when there is none or it cannot be read (then it is built again)."""
    try:
        with np.load(path) as saved:
            return Neighbours(saved["similarities"], saved["indices"].astype(np.int64), saved["lowest"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        log.warning("%s cannot be read (%s): building the graph again", path, error)
        return None


def joint_graph(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    depth: int,
    kind: str,
    cache_dir: str | Path | None = None,
    nprobe: int = 0,
) -> tuple[Neighbours, np.ndarray]:
    """The k-wide graph of queries and gallery as one set (queries first), and each query's `depth`
    nearest gallery photos (joint indices): the candidates a re-ranking re-orders."""
    count, photos = len(queries), len(gallery)
    to_gallery = nearest(queries, gallery, max(k, depth), graph_kind(kind, photos, count), nprobe=nprobe)
    among_queries = nearest(queries, queries, k, graph_kind(kind, count, count), same=True, nprobe=nprobe)
    gallery_to_queries = nearest(gallery, queries, k, graph_kind(kind, count, photos), nprobe=nprobe)
    own = gallery_graph(gallery, k, graph_kind(kind, photos, photos), cache_dir, nprobe).first(k)
    query_rows = merged(among_queries, to_gallery.first(k), count, k)
    gallery_rows = merged(gallery_to_queries, own, count, k)
    parts = (field.name for field in fields(Neighbours))  # queries' rows first, then the gallery's
    graph = Neighbours(*(np.concatenate([getattr(query_rows, p), getattr(gallery_rows, p)]) for p in parts))
    return graph, to_gallery.indices[:, :depth] + count
