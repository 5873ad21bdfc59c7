"""Benchmark gallery search: numpy matmul+argsort vs faiss exact / IVF / IVF-PQ / HNSW.

For each gallery size: build and search time, peak memory (each row in its own process,
so its peak is its own) and recall@k against exact. Synthetic landmark-like embeddings
(clusters of photos around landmark centres, unit norm), so recall reflects clustered
data rather than uniform noise.

    python scripts/bench_search.py --gallery 1000 100000 1000000 --queries 100
    python scripts/bench_search.py --nprobe-sweep 1000000   # IVF: probes vs time and recall, one index
    python scripts/bench_search.py --queries-sweep 400000 --dim 1280 -k 1000   # exact vs IVF by batch size
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import faiss
import numpy as np

from competition.retrieval.search import build_index
from competition.retrieval.vectors import l2_normalize

METHODS = ("numpy", "exact", "ivf", "ivfpq", "hnsw")


def landmark_like(count: int, queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(100, count // 40), dim)).astype(np.float32)
    gallery = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):  # in blocks: the noise of a 1M gallery alone would be 4 GB of float64
        block = min(100_000, count - start)
        gallery[start : start + block] = centres[rng.integers(0, len(centres), block)] + 0.6 * rng.normal(
            size=(block, dim)
        ).astype(np.float32)
    picked = centres[rng.integers(0, len(centres), queries)]
    return l2_normalize(gallery), l2_normalize(picked + 0.6 * rng.normal(size=picked.shape).astype(np.float32))


def numpy_topk(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ gallery.T), axis=1)[:, :k]


def one_row(method: str, size: int, queries: int, dim: int, k: int) -> dict:
    gallery, query = landmark_like(size, queries, dim)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if method == "numpy":
        built = time.perf_counter()
        found = numpy_topk(query, gallery, k)
    else:
        index = build_index(gallery, method, use_gpu=False, k=k)
        built = time.perf_counter()
        found = index.search(query, k)[1]
    searched = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact = build_index(gallery, "exact", use_gpu=False).search(query, k)[1]
    recall = float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)]))
    return {
        "method": method,
        "gallery": size,
        "build_s": built - started,
        "search_s": searched - built,
        "peak_mb": peak / 1024,
        "extra_mb": (peak - baseline) / 1024,
        "recall": recall,
    }


def nprobe_sweep(size: int, queries: int, dim: int, k: int, probes: list[int]) -> None:
    """One IVF index over `size` photos searched at each nprobe (0: compete's default), side by
    side with exact search of the same queries."""
    gallery, query = landmark_like(size, queries, dim)
    exact = build_index(gallery, "exact", use_gpu=False)
    started = time.perf_counter()
    exact_found = exact.search(query, k)[1]
    exact_seconds = time.perf_counter() - started
    started = time.perf_counter()
    index = build_index(gallery, "ivf", use_gpu=False, k=k)
    build_seconds = time.perf_counter() - started
    ivf = faiss.extract_index_ivf(index)
    default = ivf.nprobe
    print(
        f"IVF over {size:,} photos, {ivf.nlist} cells, built in {build_seconds:.0f} s; "
        f"exact search {exact_seconds:.2f} s"
    )
    print(f"| nprobe | share of cells | search {queries} queries (s) | recall@{k} vs exact | search time vs exact |")
    print("|---|---|---|---|---|")
    for nprobe in probes:
        ivf.nprobe = min(ivf.nlist, nprobe or default)
        started = time.perf_counter()
        found = index.search(query, k)[1]
        seconds = time.perf_counter() - started
        recall = float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact_found)]))
        label = f"{ivf.nprobe} (default)" if not nprobe else str(ivf.nprobe)
        share = ivf.nprobe / ivf.nlist
        print(f"| {label} | {share:.3f} | {seconds:.3f} | {recall:.3f} | {seconds / exact_seconds:.3f}× |", flush=True)


def queries_sweep(size: int, dim: int, k: int, batches: list[int]) -> None:
    """Exact and IVF (compete's default probes) over the same `size` photos, each searched by one
    batch of N queries at a time: the time a query, side by side (what `--index auto` decides on)."""
    gallery, query = landmark_like(size, max(batches), dim)
    indexes, builds = {}, {}
    for kind in ("exact", "ivf"):
        started = time.perf_counter()
        indexes[kind] = build_index(gallery, kind, use_gpu=False, k=k)
        builds[kind] = time.perf_counter() - started
    indexes["exact"].search(query[:100], k)  # faiss's and BLAS's threads start once, outside the timings
    print(f"{size:,} photos x {dim}-d, top-{k}; built: exact {builds['exact']:.1f} s, IVF {builds['ivf']:.1f} s")
    print("| queries a search | exact (ms a query) | IVF (ms a query) | exact time vs IVF |\n|---|---|---|---|")
    for batch in batches:
        per_query = {}
        for kind, index in indexes.items():
            started = time.perf_counter()
            index.search(query[-batch:], k)
            per_query[kind] = 1e3 * (time.perf_counter() - started) / batch
        print(f"| {batch:,} | {per_query['exact']:.2f} | {per_query['ivf']:.2f} | "
              f"{per_query['exact'] / per_query['ivf']:.2f}x |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="skip HNSW above this size (slow to build)")
    parser.add_argument(
        "--nprobe-sweep", type=int, metavar="SIZE", help="IVF at SIZE photos: nprobe vs time and recall"
    )
    parser.add_argument("--probes", type=int, nargs="+", default=[0, 8, 32, 128, 256, 512, 1024])
    parser.add_argument(
        "--queries-sweep", type=int, metavar="SIZE", help="exact vs IVF at SIZE photos, by queries a search"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[25, 100, 200, 400, 1000, 4000])
    parser.add_argument("--row", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nprobe_sweep:
        nprobe_sweep(args.nprobe_sweep, args.queries, args.dim, args.k, args.probes)
        return
    if args.queries_sweep:
        queries_sweep(args.queries_sweep, args.dim, args.k, args.batches)
        return
    if args.row:
        print(json.dumps(one_row(args.row[0], int(args.row[1]), args.queries, args.dim, args.k)))
        return
    print(
        f"| gallery | method | build (s) | search {args.queries} queries (s) | peak memory (MB) | "
        f"added by the search (MB) | recall@{args.k} vs exact | search time vs numpy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.gallery:
        numpy_seconds = None
        for method in args.methods:
            if method == "hnsw" and size > args.hnsw_max:
                continue
            command = [
                sys.executable,
                __file__,
                "--row",
                method,
                str(size),
                "--queries",
                str(args.queries),
                "--dim",
                str(args.dim),
                "-k",
                str(args.k),
            ]
            row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            numpy_seconds = row["search_s"] if method == "numpy" else numpy_seconds
            ratio = f"{row['search_s'] / numpy_seconds:.3f}×" if numpy_seconds else "–"
            print(
                f"| {size:,} | {method} | {row['build_s']:.2f} | {row['search_s']:.3f} | {row['peak_mb']:.0f} | "
                f"{row['extra_mb']:.0f} | {row['recall']:.3f} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
