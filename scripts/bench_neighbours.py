"""Validation's exact neighbours among a set: today's numpy blocks (retrieval/neighbours.py:
a matmul and `best_first` per block of queries) beside faiss.knn (BLAS and a heap), side by side
in one run, with how many neighbours differ (only near-equal scores may).

    python scripts/bench_neighbours.py --sizes 20000 100000 --dim 1280 --k 10

Every `--every`-th photo queries all the others (itself left out), as a validation pool does.
This is the measurement issue 49's faiss kNN starts from; neighbours_among is not changed by it.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from competition.retrieval.neighbours import neighbours_among
from competition.retrieval.vectors import l2_normalize


def faiss_neighbours(x: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """Each row's k nearest others by inner product with faiss.knn (one more found, itself dropped)."""
    _, found = faiss.knn(x[rows], x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    return np.array([[j for j in row if j != own][:k] for row, own in zip(found, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--every", type=int, default=10, help="every n-th photo queries")
    args = parser.parse_args()
    print("| photos | dim | queries | numpy blocks (s) | faiss.knn (s) | numpy / faiss | neighbours differing |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        x = l2_normalize(np.random.default_rng(0).standard_normal((size, args.dim)).astype(np.float32))
        rows = np.arange(0, size, args.every)
        started = time.perf_counter()
        _, blocks = neighbours_among(x, args.k, rows)
        numpy_s = time.perf_counter() - started
        started = time.perf_counter()
        heap = faiss_neighbours(x, args.k, rows)
        faiss_s = time.perf_counter() - started
        differing = int((heap != blocks).sum())
        print(
            f"| {size:,} | {args.dim} | {len(rows):,} | {numpy_s:.2f} | {faiss_s:.2f} | {numpy_s / faiss_s:.2f}x "
            f"| {differing} of {blocks.size:,} |"
        )


if __name__ == "__main__":
    main()
