"""A Google-Landmarks-2019-size submit on random vectors: wall time and peak memory.

760k gallery and 100k query vectors (512-d, landmark-like clusters) go through the real
post-processing and search code of `compete submit` (embedding_steps, then
scored_ranking with the index `--index auto` picks: IVF past 100k), top-100 per query, as
the Kaggle format asks. Photos are not decoded: this measures what happens after
embedding, the part that used to grow quadratically.

    python scripts/bench_glr_submit.py                       # 760k x 100k, alpha-QE k=2
    python scripts/bench_glr_submit.py --gallery 76000 --queries 10000
    python scripts/bench_glr_submit.py --queries 117000 --qe 0 --classes 81000   # label fusion

With `--classes N` the vectors cluster around N landmarks and the ranking is label-fused as
submit fuses it (`--landmarks known`): the prototype classifier over the N landmarks' centres
(what training keeps past 2,048 landmarks), each photo's sparse top-20 posteriors, and each
query's 1,000 cosine candidates re-ordered by cosine + w P(q).P(g); the posteriors' time is
its own column.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np

from competition.retrieval.posteriors import LabelClassifier, weighted_posteriors
from competition.retrieval.postprocess import describe, embedding_steps, scored_ranking
from competition.retrieval.search import recall_against_exact, resolve_index
from competition.retrieval.vectors import l2_normalize
from competition.settings.submit import PostProcess


def clustered(count: int, dim: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        block = min(100_000, count - start)
        picked = centres[rng.integers(0, len(centres), block)]
        out[start : start + block] = picked + 0.6 * rng.standard_normal((block, dim), dtype=np.float32)
    return l2_normalize(out)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=760_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--qe", type=int, default=2)
    parser.add_argument("--dba", type=int, default=0)
    parser.add_argument("--classes", type=int, default=0, help="landmarks whose posteriors are fused (0: none)")
    parser.add_argument("--weight", type=float, default=1.0, help="of the fused P(q).P(g)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes or args.gallery // 40, args.dim), dtype=np.float32)
    gallery = clustered(args.gallery, args.dim, centres, rng)
    queries = clustered(args.queries, args.dim, centres, rng)
    print(f"{platform.machine()}, vectors ready: peak {peak_gb():.2f} GB", flush=True)
    post = PostProcess(qe=args.qe, dba=args.dba)
    index = resolve_index("auto", len(gallery), len(queries))
    started = time.perf_counter()
    fusion = None
    if args.classes:
        prototypes = l2_normalize(centres)
        classifier = LabelClassifier(
            [str(c) for c in range(args.classes)], 10 * prototypes, np.zeros(args.classes, np.float32), 1.0, 10.0,
            prototypes=prototypes,
        )  # fmt: skip
        fusion = tuple(weighted_posteriors(classifier.posteriors(x), args.weight) for x in (queries, gallery))
    classified = time.perf_counter()
    queries, gallery = embedding_steps(post, queries, gallery, index)
    expanded = time.perf_counter()
    ranking = scored_ranking(post, queries, gallery, args.k, index, fusion)[1]
    ranked = time.perf_counter()
    recall = "–" if fusion else f"{recall_against_exact(queries, gallery, ranking, args.k, sample=200):.3f}"
    print(
        f"| gallery | queries | classes fused | index | post-processing | posteriors (s) | post-processing (s) | "
        f"search (s) | total (s) | peak memory (GB) | recall@{args.k} vs exact (200 queries) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.gallery:,} | {args.queries:,} | {args.classes:,} | {index} | {describe(post)} | "
        f"{classified - started:.0f} | {expanded - classified:.0f} | {ranked - expanded:.0f} | "
        f"{ranked - started:.0f} | {peak_gb():.2f} | {recall} |"
    )


if __name__ == "__main__":
    main()
