"""Validation and label-fusion choice at Google Landmarks size, on synthetic clustered features
(no photos): wall time and peak memory of the neighbour path beside the dense n x n path it
replaced, at the sizes where the dense one still fits.

    python scripts/bench_glr_train.py --sizes 5000 20000 100000

Each (path, size) runs in a fresh process, so its peak RSS is its own. Features are unit
vectors around one centre per landmark (GLDv2-clean has ~19 photos a landmark); a fold's
pool is the whole set, as the largest fold is ~0.45 of GLDv2-clean's 1.58 M photos.
Stages: validation (each pool query's top-10 among all others; at most MOST_QUERIES queries)
and the fusion choice's re-ordering (each query's FUSION_CANDIDATES cosine neighbours, re-ranked by
cosine + w P(q).P(c) for 6 weights, posteriors over `--classes-shown` classes).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np

from competition.retrieval.posteriors import posterior_agreement, rescore
from competition.retrieval.postprocess import FUSION_CANDIDATES
from competition.retrieval.search import neighbours_among
from competition.retrieval.vectors import l2_normalize
from competition.train.label_fusion import WEIGHTS
from competition.train.validation import MAP_K, pool_queries, score_pool, score_ranked

PHOTOS_PER_LANDMARK = 19


def clustered(count: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(2, count // PHOTOS_PER_LANDMARK), count)
    centres = rng.standard_normal((labels.max() + 1, dim)).astype(np.float32)
    vectors = centres[labels] + 1.2 * rng.standard_normal((count, dim), dtype=np.float32)
    return l2_normalize(vectors), labels.astype(str)


def posteriors_for(labels: np.ndarray, classes: int, seed: int = 1) -> np.ndarray:
    """Posteriors over `classes` columns (a landmark's own column when it is among them)."""
    rng = np.random.default_rng(seed)
    columns = labels.astype(np.int64) % classes
    posteriors = rng.dirichlet(np.full(classes, 0.05), size=len(labels)).astype(np.float32)
    posteriors[np.arange(len(labels)), columns] += 1.0
    return posteriors / posteriors.sum(axis=1, keepdims=True)


def dense_validation(vectors, labels, unseen):
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    queries = pool_queries(labels, most=len(labels))
    ranking = np.argsort(-similarity[queries], axis=1, kind="stable")[:, :MAP_K]
    return score_ranked(ranking, queries, labels, unseen)


def dense_fusion(vectors, labels, unseen, posteriors):
    cosine = vectors @ vectors.T
    queries = pool_queries(labels, most=len(labels))
    for weight in WEIGHTS:
        fused = cosine + weight * posteriors @ posteriors.T
        np.fill_diagonal(fused, -np.inf)
        score_ranked(np.argsort(-fused[queries], axis=1, kind="stable")[:, :MAP_K], queries, labels, unseen)


def neighbour_fusion(vectors, labels, unseen, posteriors):
    queries = pool_queries(labels)
    cosine, candidates = neighbours_among(vectors, FUSION_CANDIDATES, queries)
    agreement = posterior_agreement(posteriors[queries], posteriors, candidates)
    for weight in WEIGHTS:
        score_ranked(rescore(cosine, candidates, weight * agreement, MAP_K)[1], queries, labels, unseen)


STAGES = {
    ("validation", "dense"): lambda v, lab, u, p: dense_validation(v, lab, u),
    ("validation", "neighbours"): lambda v, lab, u, p: score_pool(v, lab, u),
    ("fusion choice", "dense"): dense_fusion,
    ("fusion choice", "neighbours"): neighbour_fusion,
}


def measure(stage: tuple[str, str], size: int, dim: int, classes: int, queue) -> None:
    vectors, labels = clustered(size, dim)
    unseen = np.random.default_rng(2).random(size) < 0.3
    posteriors = posteriors_for(labels, classes) if stage[0] == "fusion choice" else None
    started = time.perf_counter()
    STAGES[stage](vectors, labels, unseen, posteriors)
    queue.put((time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes-shown", type=int, default=64, help="posterior columns (dense logistic regression)")
    parser.add_argument("--dense-up-to", type=int, default=20000, help="largest size the dense path is run at")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print("| stage | photos | dense s | dense peak GB | neighbours s | neighbours peak GB | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for stage in ("validation", "fusion choice"):
        for size in args.sizes:
            results = {}
            for path in ("dense", "neighbours"):
                if path == "dense" and size > args.dense_up_to:
                    continue
                queue = context.Queue()
                process = context.Process(
                    target=measure, args=((stage, path), size, args.dim, args.classes_shown, queue)
                )
                process.start()
                results[path] = queue.get()
                process.join()
            dense = results.get("dense")
            seconds, peak = results["neighbours"]
            cells = f"{dense[0]:.1f} | {dense[1]:.2f}" if dense else "– | –"
            ratio = f"{dense[0] / seconds:.1f}x" if dense else "–"
            print(f"| {stage} | {size:,} | {cells} | {seconds:.1f} | {peak:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
