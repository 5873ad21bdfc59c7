"""Diffusion re-ranking at gallery sizes up to 100 k, beside k-reciprocal re-ranking (dense, so
only where it fits): wall time, peak memory and mAP@10, measured side by side in one run.

    python scripts/bench_diffusion.py --sizes 2000 10000 100000 --queries 1000

Each (method, size) runs in a fresh process, so its peak RSS is its own. Photos are unit vectors
around one centre per landmark, 6 photos a landmark (a thin gallery, as in our competitions);
the queries are further photos of the same landmarks. Diffusion: the joint query + gallery graph
(10 mutual neighbours, alpha 0.9), each query's walk truncated to its 1000 nearest gallery photos.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np

from competition.retrieval.postprocess import RERANK_MAX, scored_ranking
from competition.retrieval.vectors import l2_normalize
from competition.settings.submit import PostProcess

PHOTOS_PER_LANDMARK = 6
NOISE = 1.6  # per dimension, against centres of norm ~sqrt(dim): cosine alone reaches mAP@10 ~0.5
METHODS = {"cosine": PostProcess(), "k-reciprocal": PostProcess(rerank=True), "diffusion": PostProcess(diffusion=True)}


def competition(gallery_size: int, queries: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    landmarks = max(2, gallery_size // PHOTOS_PER_LANDMARK)
    centres = rng.standard_normal((landmarks, dim)).astype(np.float32)
    gallery_labels = np.arange(gallery_size) % landmarks
    query_labels = rng.integers(0, landmarks, queries)

    def photos(labels):
        return l2_normalize(centres[labels] + NOISE * rng.standard_normal((len(labels), dim), dtype=np.float32))

    return photos(query_labels), photos(gallery_labels), query_labels, gallery_labels


def map_at_10(ranking, query_labels, gallery_labels) -> float:
    hits = gallery_labels[ranking] == query_labels[:, None]
    precision = np.cumsum(hits, axis=1) / np.arange(1, ranking.shape[1] + 1)
    relevant = np.minimum(np.bincount(gallery_labels)[query_labels], ranking.shape[1])
    return float(((precision * hits).sum(axis=1) / relevant).mean())


def measure(method: str, size: int, queries: int, dim: int, queue) -> None:
    query_vectors, gallery, query_labels, gallery_labels = competition(size, queries, dim)
    started = time.perf_counter()
    ranking = scored_ranking(METHODS[method], query_vectors, gallery, 10)[1]
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    queue.put((seconds, peak, map_at_10(ranking, query_labels, gallery_labels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print("| gallery | queries | method | seconds | peak GB | mAP@10 | time vs cosine |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        cosine_seconds = None
        for method in METHODS:
            if method == "k-reciprocal" and size + args.queries > RERANK_MAX:
                print(f"| {size:,} | {args.queries:,} | {method} | – | – | – | refused above {RERANK_MAX:,} photos |")
                continue
            queue = context.Queue()
            process = context.Process(target=measure, args=(method, size, args.queries, args.dim, queue))
            process.start()
            seconds, peak, quality = queue.get()
            process.join()
            cosine_seconds = cosine_seconds or seconds
            print(
                f"| {size:,} | {args.queries:,} | {method} | {seconds:.1f} | {peak:.2f} | {quality:.3f} | "
                f"{seconds / cosine_seconds:.0f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
