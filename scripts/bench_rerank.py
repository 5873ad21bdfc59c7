"""Re-ranking at gallery sizes up to Google Landmarks' 760 k: k-reciprocal and diffusion on the
shared nearest-neighbour graph (retrieval/rerank/graph.py), its first build and its cached reuse, beside
plain cosine: wall time, peak memory and mAP@10, measured side by side in one run.

    python scripts/bench_rerank.py --sizes 2000 10000 100000 760000 --queries 1000

Each (method, size) runs in a fresh process, so its peak RSS is its own; "k-reciprocal, graph
built" starts with an empty graph cache, the rows after it read the gallery's graph from it.
Photos are unit vectors around one centre per landmark, 6 photos a landmark (a thin gallery, as
in our competitions); the queries are further photos of the same landmarks. Past 100 k gallery
photos the graph is approximate (IVF): its recall of the exact 10 nearest is measured on 1,000
gallery photos.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time

import numpy as np

from competition.retrieval.postprocess import scored_ranking
from competition.retrieval.rerank.graph import gallery_graph, graph_kind, nearest
from competition.retrieval.vectors import l2_normalize
from competition.settings.submit import PostProcess

PHOTOS_PER_LANDMARK = 6
NOISE = 1.6  # per dimension, against centres of norm ~sqrt(dim): cosine alone reaches mAP@10 ~0.5
METHODS = {
    "cosine": PostProcess(),
    "k-reciprocal, graph built": PostProcess(re_ranking="k-reciprocal"),
    "k-reciprocal, graph cached": PostProcess(re_ranking="k-reciprocal"),
    "diffusion, graph cached": PostProcess(re_ranking="diffusion"),
}


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


def graph_recall(gallery: np.ndarray, sample: int = 1000) -> float:
    """Share of the exact 10 nearest that the cached graph holds, on a sample of gallery photos."""
    rows = np.random.default_rng(0).choice(len(gallery), min(sample, len(gallery)), replace=False)
    graph = gallery_graph(gallery, 10, graph_kind("auto", len(gallery), len(gallery)))
    exact = nearest(gallery[rows], gallery, 11).indices
    found = [len(set(g[:10]) & set(e[e != row][:10])) / 10 for g, e, row in zip(graph.indices[rows], exact, rows)]
    return float(np.mean(found))


def measure(method: str, size: int, queries: int, dim: int, cache: str, queue) -> None:
    query_vectors, gallery, query_labels, gallery_labels = competition(size, queries, dim)
    if method == "graph recall":
        queue.put(graph_recall(gallery))
        return
    started = time.perf_counter()
    index = "auto" if size >= 100_000 else "exact"
    ranking = scored_ranking(METHODS[method], query_vectors, gallery, 10, index=index, graph_cache=cache)[1]
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
    recalls = {}
    for size in args.sizes:
        cosine_seconds = None
        cache = tempfile.mkdtemp(prefix="graph-cache-")
        for method in [*METHODS, "graph recall"]:
            queue = context.Queue()
            process = context.Process(target=measure, args=(method, size, args.queries, args.dim, cache, queue))
            process.start()
            result = queue.get()
            process.join()
            if method == "graph recall":
                recalls[size] = result
                continue
            seconds, peak, quality = result
            cosine_seconds = cosine_seconds or seconds
            print(
                f"| {size:,} | {args.queries:,} | {method} | {seconds:.1f} | {peak:.2f} | {quality:.3f} | "
                f"{seconds / cosine_seconds:.0f}x |",
                flush=True,
            )
    print("\n| gallery | graph | recall of the exact 10 nearest (1,000 photos) |\n|---|---|---|")
    for size, recall in recalls.items():
        print(f"| {size:,} | {graph_kind('auto', size, size)} | {recall:.3f} |")


if __name__ == "__main__":
    main()
