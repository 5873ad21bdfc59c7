"""Nearest gallery images for each query by cosine similarity, with faiss.

Vectors are L2-normalised, so inner product is cosine similarity. Exact search by
default; IVF or HNSW for very large galleries (their recall against exact is measured).
The GPU is used when faiss was built with CUDA and a GPU is present; queries are
searched in batches so memory stays bounded for large query sets.
"""

from __future__ import annotations

import functools
import hashlib
import logging

import faiss
import numpy as np

from competition.errors import CompeteError
from competition.progress import steps
from competition.retrieval.device_search import DeviceExactIndex, cuda_device
from competition.retrieval.vectors import Rows, l2_normalize
from competition.settings.choices import INDEXES

log = logging.getLogger(__name__)


def _gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def faiss_build() -> str:
    """Which faiss is installed and whether it searches on GPUs (for `compete models`)."""
    gpus = _gpu_count()
    where = (
        f"GPU build, {gpus} GPU(s) in use"
        if gpus
        else ("GPU build, no GPU visible" if hasattr(faiss, "StandardGpuResources") else "CPU build")
    )
    return f"faiss {getattr(faiss, '__version__', '?')} ({where})"


TRAIN_PER_CELL = 64  # k-means training points per IVF cell, a seeded sample (faiss wants >= 39, caps at 256)
APPROXIMATE_FROM = 100_000  # gallery size from which "auto" may pick IVF over exact search
# ...unless one search asks this many queries at once: exact search then multiplies blocks of
# queries by the gallery in BLAS, while IVF reads each probed vector from memory once per query;
# at 1/16 of the cells probed, exact was 1.2-1.7x faster from 200-400 queries on (512 and 1280-d,
# 100k and 400k photos, k 100 and 1000) and builds nothing: scripts/bench_search.py --queries-sweep
EXACT_FOR_QUERIES = 1_000


def resolve_index(kind: str, gallery_size: int, queries: int = 0) -> str:
    """The index `kind` means for one search of `queries` rows at once over `gallery_size` photos
    (0 queries: not known, an index kept to answer queries as they come)."""
    if kind not in INDEXES:
        raise CompeteError(f"index must be one of {INDEXES}, not '{kind}'")
    if kind == "auto":
        return "ivf" if gallery_size >= APPROXIMATE_FROM and queries < EXACT_FOR_QUERIES else "exact"
    return kind


def _trained(index: faiss.Index, vectors: Rows) -> None:
    """Train an index that needs it on a seeded sample: TRAIN_PER_CELL vectors per IVF cell."""
    if index.is_trained:
        return
    ivf = faiss.try_extract_index_ivf(index)
    size = TRAIN_PER_CELL * ivf.nlist if ivf is not None else 100_000
    sample = np.random.default_rng(0).permutation(len(vectors))[:size]
    index.train(vectors.take(np.sort(sample)))


def _added(index: faiss.Index, vectors: Rows) -> faiss.Index:
    """`index` with every row added, a block at a time: a 760k gallery normalised whole would be
    a third 4 GB copy of it beside the caller's and the index's own. An HNSW graph depends on the
    batches its rows come in: added whole, so it stays the graph it was."""
    if isinstance(index, faiss.Index) and isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        index.add(vectors.whole())
        return index
    for _, block in vectors.blocks():
        index.add(block)
    return index


def build_index(
    gallery: np.ndarray,
    kind: str = "exact",
    use_gpu: bool | None = None,
    k: int = 100,
    nprobe: int = 0,
    factory: str = "",
    normalize: bool = True,
) -> faiss.Index:
    """Inner-product index over L2-normalised vectors.

    exact: brute force (right up to ~1e5 images, and on a GPU well beyond: faiss GPU, or torch
    where faiss is the CPU build); ivf: inverted
    lists, 4*sqrt(n) cells, 1/16 of them probed (more when that holds fewer than 2k
    photos; `nprobe` sets it), trained on TRAIN_PER_CELL sampled vectors per cell; ivfpq:
    the same lists holding product-quantised codes (dim/8 bytes a vector instead of dim*4:
    for galleries that do not fit in memory as flat vectors); hnsw: a graph index, CPU only,
    exploring at least 2k candidates. `factory`: any faiss index_factory string instead
    (e.g. "OPQ64,IVF4096,PQ64"), trained the same way. `normalize=False`: the rows' inner products
    as given (rows that carry label posteriors beside their embedding)."""
    vectors = Rows(gallery).normalized() if normalize else Rows(gallery)
    count, dim = gallery.shape
    kind = "factory" if factory else resolve_index(kind, count)
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.index_factory(dim, "HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(128, 2 * k)
    else:
        index = _factory_index(vectors, dim, factory) if kind == "factory" else _ivf_index(vectors, dim, kind)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            cells = ivf.nlist
            ivf.nprobe = min(cells, nprobe or max(1, cells // 16, int(np.ceil(2 * k * cells / count))))
    if use_gpu is not False and _gpu_count() > 0:
        index = _on_gpus_if_it_pays(index, count, k, use_gpu)
    elif (
        kind == "exact" and use_gpu is not False and (count >= GPU_FROM or use_gpu) and (gpu := cuda_device(count, dim))
    ):
        index = DeviceExactIndex(dim, count, gpu)  # faiss without GPUs (faiss-cpu): torch searches there
    try:
        return _added(index, vectors)
    except RuntimeError as error:  # e.g. IDMap,Flat wants ids
        if kind != "factory":
            raise
        index = _exact_instead(dim, factory, f"faiss cannot add the gallery to it ({_first_line(error)})")
        return _added(index, vectors)


# faiss GPU indexes: k and nprobe at most 2048 (GPU_MAX_K in faiss/gpu/utils/DeviceDefs.cuh); an
# IVFPQ's bytes a code among these, and float16 lookup tables from 56 on (gpu/impl/PQCodeDistances)
GPU_MAX_K = 2048
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
GPU_PQ_FLOAT16_FROM = 56
# below this many photos a CPU search takes well under a second, while each GPU reserves ~1.5 GB of scratch
GPU_FROM = 20_000


def gpu_refusal(index: faiss.Index, count: int, k: int, asked: bool | None) -> str:
    """Why an index stays on the CPU ("" when it may go to the GPUs): HNSW (no GPU version), a
    gallery too small to pay (unless asked for), or a k or nprobe past faiss GPU's limit."""
    ivf = faiss.try_extract_index_ivf(index)
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        return "HNSW has no GPU version"
    if count < GPU_FROM and asked is None:
        return f"{count} photos search faster on the CPU than a GPU's set-up"
    if k > GPU_MAX_K:
        return f"k = {k} is past faiss GPU's limit of {GPU_MAX_K}"
    if ivf is not None and ivf.nprobe > GPU_MAX_K:
        return f"nprobe {ivf.nprobe} is past faiss GPU's limit of {GPU_MAX_K}"
    pq = faiss.downcast_index(index)
    if isinstance(pq, faiss.IndexIVFPQ) and pq.pq.M not in GPU_PQ_BYTES:
        return f"{pq.pq.M}-byte PQ codes, which faiss GPU does not take (one of {', '.join(map(str, GPU_PQ_BYTES))})"
    return ""


def gpu_pq_bytes(dim: int) -> int | None:
    """The largest code size a GPU IVFPQ takes that splits `dim` into parts of 8 or more numbers
    (dim/8 bytes, as on the CPU, where that is allowed): 64 for 512, 1280 or 2048-d, 96 for 768."""
    fitting = [m for m in GPU_PQ_BYTES if dim % m == 0 and m <= dim // 8]
    return max(fitting) if fitting else None


@functools.lru_cache(maxsize=None)
def _gpu_resources(count: int) -> tuple:
    """One StandardGpuResources per GPU for the process (each reserves scratch memory): every index shares them."""
    return tuple(faiss.StandardGpuResources() for _ in range(count))


def _to_gpus(index: faiss.Index) -> faiss.Index:
    """The index sharded over every visible GPU (each holds its share of the gallery, not a copy)."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    pq = faiss.downcast_index(index)
    options.useFloat16 = isinstance(pq, faiss.IndexIVFPQ) and pq.pq.M >= GPU_PQ_FLOAT16_FROM  # its lookup tables
    return faiss.index_cpu_to_gpu_multiple_py(list(_gpu_resources(_gpu_count())), index, co=options)


def _on_gpus_if_it_pays(index: faiss.Index, count: int, k: int, asked: bool | None) -> faiss.Index:
    """`index` on the GPUs where they can take it and it pays; else the CPU index, with the reason
    when a GPU was asked for or the gallery is large (a silent CPU search would surprise there)."""
    if why := gpu_refusal(index, count, k, asked):
        if asked or count >= GPU_FROM:
            log.warning("faiss: the index stays on the CPU: %s", why)
        return index
    try:
        return _to_gpus(index)
    except (RuntimeError, AttributeError) as error:  # an index_factory string with no GPU version
        log.warning("faiss: the index stays on the CPU: the GPU cannot hold it (%s)", _first_line(error))
        return index


MIN_PER_CENTROID = 39  # faiss's k-means warns (once per sub-quantiser) below this many points a centroid
PQ_CENTROIDS = 256  # per sub-quantiser at faiss's default 8 bits a code


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__


def _exact_instead(dim: int, factory: str, why: str) -> faiss.Index:
    log.warning("--index-factory '%s': %s; exact search instead", factory, why)
    return faiss.IndexFlatIP(dim)


def _ivf_index(vectors: Rows, dim: int, kind: str) -> faiss.Index:
    """IVF with 4*sqrt(n) cells (at most one per MIN_PER_CENTROID photos), trained; ivfpq's codes
    need PQ_CENTROIDS * MIN_PER_CENTROID photos to train, and fewer keep flat codes."""
    count, needed = len(vectors), PQ_CENTROIDS * MIN_PER_CENTROID
    cells = max(1, min(int(4 * np.sqrt(count)), count // MIN_PER_CENTROID))
    compressible = dim % 8 == 0 and count >= needed
    if kind == "ivfpq" and not compressible:
        log.warning("--index ivfpq: %d gallery photos are too few to train compressed codes (%d needed): "
                    "IVF with flat codes instead", count, needed)  # fmt: skip
    codes = f"PQ{_pq_bytes(dim)}" if kind == "ivfpq" and compressible else "Flat"
    index = faiss.index_factory(dim, f"IVF{cells},{codes}", faiss.METRIC_INNER_PRODUCT)
    _trained(index, vectors)
    return index


def _pq_bytes(dim: int) -> int:
    """dim/8 bytes a code; on a GPU the nearest size it takes (gpu_pq_bytes), else the CPU index is kept."""
    return (gpu_pq_bytes(dim) or dim // 8) if _gpu_count() > 0 else dim // 8


def _factory_index(vectors: Rows, dim: int, factory: str) -> faiss.Index:
    """The user's index_factory string, trained; one it cannot train on this gallery (too few photos
    for its cells or codes, which faiss would warn about once per sub-quantiser) is exact search,
    said once."""
    count = len(vectors)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise CompeteError(f"--index-factory '{factory}': faiss cannot build it ({_first_line(error)})") from None
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and count < MIN_PER_CENTROID * ivf.nlist:
        return _exact_instead(dim, factory, f"{count} gallery photos are too few for {ivf.nlist} IVF cells")
    if "PQ" in factory.upper() and count < PQ_CENTROIDS * MIN_PER_CENTROID:
        return _exact_instead(dim, factory, f"{count} gallery photos are too few to train its quantised codes")
    try:
        _trained(index, vectors)
    except RuntimeError as error:
        return _exact_instead(dim, factory, f"faiss cannot train it on this gallery ({_first_line(error)})")
    return index


def is_exact(index: faiss.Index | DeviceExactIndex) -> bool:
    """Brute force (on CPU, or each GPU's shard of it): what an index_factory 'Flat' builds too."""
    if isinstance(index, DeviceExactIndex):
        return True
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexShards):
        index = faiss.downcast_index(index.at(0))
    return isinstance(index, (faiss.IndexFlat, *([faiss.GpuIndexFlat] if hasattr(faiss, "GpuIndexFlat") else [])))


def probes(index: faiss.Index | DeviceExactIndex) -> int | None:
    """The IVF cells a query probes (None: not an IVF index), on the CPU or each GPU's shard."""
    if isinstance(index, DeviceExactIndex):
        return None
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexShards):
        index = faiss.downcast_index(index.at(0))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:  # a GPU IVF index is no faiss.IndexIVF, but has nprobe too
        return int(index.nprobe) if "IVF" in type(index).__name__ and hasattr(index, "nprobe") else None
    return int(ivf.nprobe)


class Searcher:
    """Searches galleries with one kind of index, building each gallery's index once: DBA's
    neighbours, α-QE's and the final ranking ask the same post-DBA gallery twice, and an IVF
    build over a million photos takes minutes."""

    def __init__(
        self,
        kind: str = "exact",
        deepest_k: int = 100,
        nprobe: int = 0,
        factory: str = "",
        use_gpu=None,
        progress: bool = False,
    ):
        self.kind, self.deepest_k, self.nprobe, self.factory, self.use_gpu = kind, deepest_k, nprobe, factory, use_gpu
        self.progress = progress  # report searches of several batches (117k queries x 760k photos: minutes)
        self.key, self.index = b"", None  # the last gallery's index: one held at a time (each may be GBs)
        self.nprobe_used: int | None = None
        self.exact = kind == "exact" and not factory  # until an index is built: then what was built
        if nprobe and self.exact:
            log.warning("--nprobe has no effect on an exact index (it sets the cells an IVF index probes)")

    def index_for(self, gallery: np.ndarray, k: int) -> faiss.Index:
        gallery = np.ascontiguousarray(gallery, dtype=np.float32)  # no copy for the vectors submit passes
        key = hashlib.blake2b(gallery.data, digest_size=16).digest() + str(gallery.shape).encode()
        if key != self.key:  # the gallery's content, not its array: each step hands on a new one
            deepest = max(k, self.deepest_k)
            self.index = build_index(gallery, self.kind, self.use_gpu, deepest, self.nprobe, self.factory)
            self.key, self.nprobe_used, self.exact = key, probes(self.index), is_exact(self.index)
        return self.index

    def describe(self) -> str:
        """The index as the leaderboard shows it: its kind and, for IVF, the cells probed."""
        name = self.factory or self.kind
        if self.exact and name != "exact":
            name += " (exact search)"
        return name + ("" if self.nprobe_used is None else f", nprobe {self.nprobe_used}")


def search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    use_gpu: bool | None = None,
    batch_size: int = 8192,
    index: str | Searcher = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, gallery indices), each (num_queries, min(k, gallery size)), best first."""
    k = min(k, len(gallery))
    if isinstance(index, Searcher):  # its index may be built already
        built, exact, progress = index.index_for(gallery, k), index.exact, index.progress
    else:  # one search: build without keeping (or hashing) anything
        built = build_index(gallery, resolve_index(index, len(gallery), len(queries)), use_gpu, k)
        exact, progress = is_exact(built), False
    similarities, indices = search_index(built, l2_normalize(queries), k, batch_size, progress)
    short = np.flatnonzero((indices < 0).any(axis=1))
    if len(short) and not exact:  # an approximate index found fewer than k: those rows exactly
        similarities[short], indices[short] = search(queries[short], gallery, k, use_gpu, batch_size, "exact")
    return similarities, indices


def search_index(
    index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = 8192, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of a built index's top-k for the rows as given, a batch at a time
    (`progress`: reported when there are several)."""
    queries = np.ascontiguousarray(queries, np.float32)
    # written in place: 117k queries' top-1000 are 1.4 GB, and parts then joined held them twice
    similarities, indices = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
    described = f"search of {len(queries):,} queries among {index.ntotal:,} photos"
    starts = range(0, len(queries), batch_size)
    for start in steps(starts, described, unit="batch", enabled=progress and len(starts) > 1):
        batch = slice(start, start + batch_size)
        similarities[batch], indices[batch] = index.search(queries[batch], k)
    return similarities, indices


def recall_against_exact(
    queries: np.ndarray, gallery: np.ndarray, approximate: np.ndarray, k: int, sample: int = 500, seed: int = 0
) -> float:
    """Fraction of the exact top-k that the approximate top-k found, on a sample of queries."""
    rows = np.random.default_rng(seed).permutation(len(queries))[:sample]
    _, exact = search(queries[rows], gallery, k)
    found = [len(set(a[:k]) & set(e)) / len(e) for a, e in zip(approximate[rows], exact)]
    return float(np.mean(found)) if found else float("nan")
