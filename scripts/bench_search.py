"""Benchmark gallery search: exact vs IVF vs HNSW, build and search time, recall@k vs exact.

Synthetic landmark-like embeddings (clusters of photos around landmark centres, unit
norm), so recall reflects clustered data rather than uniform noise.

    python scripts/bench_search.py --gallery 100000 300000 --queries 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from competition.retrieval.search import build_index, l2_normalize, search


def landmark_like(count: int, dim: int, landmarks: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(landmarks, dim)).astype(np.float32)
    labels = rng.integers(0, landmarks, count)
    return l2_normalize(centres[labels] + 0.6 * rng.normal(size=(count, dim)).astype(np.float32)), centres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for size in args.gallery:
        gallery, centres = landmark_like(size, args.dim, max(100, size // 40), rng)
        queries = l2_normalize(
            centres[rng.integers(0, len(centres), args.queries)]
            + 0.6 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
        )
        _, exact = search(queries, gallery, args.k)
        timings = {}
        for kind in ("exact", "ivf", "hnsw"):
            started = time.perf_counter()
            index = build_index(gallery, kind)
            built = time.perf_counter()
            _, found = index.search(queries, args.k)
            searched = time.perf_counter()
            recall = np.mean([len(set(f) & set(e)) / args.k for f, e in zip(found, exact)])
            timings[kind] = searched - built
            print(
                f"gallery {size:>8}  {kind:<5}  build {built - started:6.2f}s  search {searched - built:6.2f}s "
                f"({args.queries / (searched - built):8.0f} queries/s)  recall@{args.k} {recall:.3f}"
            )
        print(
            f"search speed-up vs exact: ivf {timings['exact'] / timings['ivf']:.1f}x, "
            f"hnsw {timings['exact'] / timings['hnsw']:.1f}x"
        )


if __name__ == "__main__":
    main()
