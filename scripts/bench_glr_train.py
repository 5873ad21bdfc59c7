"""The last-layer path at Google Landmarks size, on synthetic clustered features (no photos):
wall time and peak memory of each stage now beside the code it replaced, at the sizes where
that one still fits (the dense n x n matrices; a loop over landmarks for the whitening).

    python scripts/bench_glr_train.py --sizes 5000 20000 100000 400000 1580000

Each (path, size) runs in a fresh process, so its peak RSS is its own. Features are unit
vectors around one centre per landmark (GLDv2-clean has ~19 photos a landmark); a fold's
pool is the whole set, as the largest fold is ~0.45 of GLDv2-clean's 1.58 M photos.
Stages: the learned whitening's fit (class means, shrunk within-class covariance); validation
(each pool query's top-10 among all others; at most MOST_QUERIES queries); the fusion choice's
re-ordering (each query's FUSION_CANDIDATES cosine neighbours, re-ranked by cosine + w P(q).P(c)
for 6 weights, posteriors over `--classes-shown` classes); labels (the label classifier fitted
on every photo, one class per ~19 photos: class prototypes past 2,048 classes, and every photo's
sparse top-20 posteriors).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time

import numpy as np
from sklearn.covariance import LedoitWolf

from competition.retrieval.neighbours import neighbours_among
from competition.retrieval.posteriors import FUSION_CANDIDATES, fit_label_classifier, posterior_agreement, rescore
from competition.retrieval.vectors import l2_normalize
from competition.train.folds import class_folds
from competition.train.label_fusion import WEIGHTS, fit_label_fusion
from competition.train.postprocess_choice import choose_postprocess
from competition.train.validation import MAP_K, PoolScores, compare, pool_queries, score_pool, score_ranked
from competition.train.whitening import apply_learned_whitening, fit_learned_whitening

PHOTOS_PER_LANDMARK = 19


def clustered(count: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one centre per landmark, made a block at a time so that making them
    holds little more than the vectors themselves (a stage's peak is then its own)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(2, count // PHOTOS_PER_LANDMARK), count)
    centres = rng.standard_normal((labels.max() + 1, dim)).astype(np.float32)
    vectors = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        rows = slice(start, start + 100_000)
        vectors[rows] = l2_normalize(centres[labels[rows]] + 1.2 * rng.standard_normal((len(labels[rows]), dim)))
    return vectors, labels.astype(str)


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


def whitening_by_landmark_loop(vectors, labels):
    """The learned whitening's fit before this bench: offsets gathered by a mask per landmark."""
    features = l2_normalize(vectors).astype(np.float64)
    offsets = [
        features[labels == label] - features[labels == label].mean(axis=0)
        for label in np.unique(labels)
        if (labels == label).sum() > 1
    ]
    estimate = LedoitWolf(assume_centered=True).fit(np.concatenate(offsets))
    np.linalg.eigh(estimate.covariance_)


def labels_now(vectors, labels):
    fit_label_classifier(vectors, labels).posteriors(vectors)


def _timed(name: str, started: float) -> float:
    print(f"    {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return time.perf_counter()


def last_layer_path(vectors, labels):
    """What `compete train` does after feature extraction with the default head (train/last_layer.py):
    folds; the pretrained baseline and the learned whitening scored on the mixed folds; the final
    whitening; the label fusion chosen on the closed folds and gated on the mixed ones; the
    post-processing choice. Each sub-stage's time goes to stderr."""
    started = time.perf_counter()
    mixed, closed = class_folds(labels, 4, 0), class_folds(labels, 4, 0, hold_out_landmarks=False)
    started = _timed(f"folds (pools of {[len(f.pool) for f in mixed]} photos)", started)

    def whitening_for(train):
        mean, matrix, _ = fit_learned_whitening(vectors[train], labels[train])
        return lambda rows: apply_learned_whitening(rows, mean, matrix)

    heads = {}

    def head_for(train):  # each fold's head fitted once, as train/last_layer._once_per_fold does
        key = train.tobytes()
        if key not in heads:
            heads[key] = whitening_for(train)
        return heads[key]

    def scored(folds, embed=None):
        return PoolScores.concat(
            [
                score_pool(embed(f.train)(vectors[f.pool]) if embed else vectors[f.pool], labels[f.pool], f.unseen)
                for f in folds
            ]  # fmt: skip
        )

    baseline = scored(mixed)
    started = _timed("baseline on the mixed folds", started)
    scores = scored(mixed, head_for)
    compare(scores, baseline)
    final = whitening_for(np.arange(len(vectors)))
    started = _timed("whitening fitted and scored on the mixed folds, then on every photo", started)
    fit_label_fusion(vectors, labels, closed, mixed, head_for, final, scored(closed))
    started = _timed("label fusion (closed baseline, strength and weight, gate)", started)
    choose_postprocess([(head_for(f.train)(vectors[f.pool]), f) for f in mixed], labels)
    _timed("post-processing choice", started)


STAGES = {
    ("whitening fit", "dense"): lambda v, lab, u, p: whitening_by_landmark_loop(v, lab),
    ("whitening fit", "neighbours"): lambda v, lab, u, p: fit_learned_whitening(v, lab),
    ("validation", "dense"): lambda v, lab, u, p: dense_validation(v, lab, u),
    ("validation", "neighbours"): lambda v, lab, u, p: score_pool(v, lab, u),
    ("fusion choice", "dense"): dense_fusion,
    ("fusion choice", "neighbours"): neighbour_fusion,
    ("labels", "neighbours"): lambda v, lab, u, p: labels_now(v, lab),
    ("last-layer path", "neighbours"): lambda v, lab, u, p: last_layer_path(v, lab),
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
    parser.add_argument(
        "--stages", nargs="+", default=["whitening fit", "validation", "fusion choice", "labels"], help="which to run"
    )
    parser.add_argument("--dense-up-to", type=int, default=20000, help="largest size the code replaced is run at")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print("| stage | photos | before s | before peak GB | now s | now peak GB | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for stage in args.stages:
        for size in args.sizes:
            results = {}
            for path in ("dense", "neighbours"):
                if (stage, path) not in STAGES or (path == "dense" and size > args.dense_up_to):
                    continue
                queue = context.Queue()
                process = context.Process(
                    target=measure, args=((stage, path), size, args.dim, args.classes_shown, queue)
                )
                process.start()
                process.join()
                results[path] = queue.get() if process.exitcode == 0 else (float("nan"), float("nan"))
            dense = results.get("dense")
            seconds, peak = results["neighbours"]
            cells = f"{dense[0]:.1f} | {dense[1]:.2f}" if dense else "– | –"
            ratio = f"{dense[0] / seconds:.1f}x" if dense else "–"
            print(f"| {stage} | {size:,} | {cells} | {seconds:.1f} | {peak:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
