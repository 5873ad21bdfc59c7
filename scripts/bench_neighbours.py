"""Validation's exact neighbours among a set, both ways retrieval/neighbours.py finds them: numpy
blocks (a matmul and `best_first` per block of queries) and faiss.knn (BLAS and a heap, ties
re-ordered by index, rows with a tie at the edge ranked densely), side by side in one run, with
how many neighbours differ (only near-equal scores may).

    python scripts/bench_neighbours.py --sizes 20000 100000 --dim 1280 --k 10

Every `--every`-th photo queries all the others (itself left out), as a validation pool does.
neighbours_among takes faiss from FAISS_FROM candidates on.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from competition.retrieval import neighbours
from competition.retrieval.vectors import l2_normalize


def timed(x: np.ndarray, k: int, rows: np.ndarray, faiss_from: float) -> tuple[float, np.ndarray]:
    neighbours.FAISS_FROM = faiss_from
    started = time.perf_counter()
    found = neighbours.neighbours_among(x, k, rows)[1]
    return time.perf_counter() - started, found


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
        numpy_s, blocks = timed(x, args.k, rows, float("inf"))
        faiss_s, heap = timed(x, args.k, rows, 0)
        differing = int((heap != blocks).sum())
        print(
            f"| {size:,} | {args.dim} | {len(rows):,} | {numpy_s:.2f} | {faiss_s:.2f} | {numpy_s / faiss_s:.2f}x "
            f"| {differing} of {blocks.size:,} |"
        )


if __name__ == "__main__":
    main()
