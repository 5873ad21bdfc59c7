"""Label posteriors over many landmarks: dense rows (every class) beside sparse rows (each photo's
top TOP_CLASSES), measured side by side in one run: wall time, the rows' size in memory, and the
fusion term on each query's 1000 candidates (the same numbers up to the dropped tail).

    python scripts/bench_posteriors.py --classes 8000 81000 --photos 4000

Photos are unit vectors near one of `classes` prototypes (random centres, 3 training photos a
landmark); the classifier is the prototype one that `fit_label_classifier` picks above
LOGISTIC_MOST_CLASSES. Dense rows at Google Landmarks' 81k classes and a 760k gallery would take
~250 GB; they are measured here at the sizes given.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.sparse import issparse

from competition.retrieval import posteriors as module
from competition.retrieval.vectors import l2_normalize

CANDIDATES = 1000


def _rows_bytes(rows) -> int:
    if issparse(rows):  # values, column indices, row pointers
        return rows.data.nbytes + rows.indices.nbytes + rows.indptr.nbytes
    return rows.nbytes


def measure(classes: int, photos: int, dim: int, sparse: bool) -> dict:
    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.normal(size=(classes, dim)).astype(np.float32))
    labels = np.repeat(np.arange(classes), 3)
    train = l2_normalize(centres[labels] + rng.normal(scale=0.05, size=(len(labels), dim)).astype(np.float32))
    classifier = module.fit_label_classifier(train, labels.astype(str), strength=30.0)
    limit = module.LOGISTIC_MOST_CLASSES
    module.LOGISTIC_MOST_CLASSES = 0 if sparse else classes  # the same prototypes, either rows
    try:
        queries = l2_normalize(centres[rng.integers(0, classes, photos)] + rng.normal(scale=0.05, size=(photos, dim)))
        started = time.perf_counter()
        rows = module.weighted_posteriors(classifier.posteriors(queries.astype(np.float32)), 1.0)
        posteriors_s = time.perf_counter() - started
        candidates = rng.integers(0, photos, (photos, CANDIDATES))
        started = time.perf_counter()
        agreement = module.posterior_agreement(rows, rows, candidates)
        agreement_s = time.perf_counter() - started
    finally:
        module.LOGISTIC_MOST_CLASSES = limit
    return {"posteriors_s": posteriors_s, "agreement_s": agreement_s, "bytes": _rows_bytes(rows), "agree": agreement}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[8000, 81000])
    parser.add_argument("--photos", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    print(f"| classes | rows | posteriors s | rows MB | agreement on {CANDIDATES} candidates s | max difference |")
    print("|---|---|---|---|---|---|")
    for classes in args.classes:
        dense = measure(classes, args.photos, args.dim, sparse=False)
        sparse = measure(classes, args.photos, args.dim, sparse=True)
        gap = float(np.abs(dense["agree"] - sparse["agree"]).max())
        for name, result in (("dense", dense), (f"sparse top {module.TOP_CLASSES}", sparse)):
            print(
                f"| {classes:,} | {name} | {result['posteriors_s']:.1f} | {result['bytes'] / 1e6:.1f} | "
                f"{result['agreement_s']:.2f} | {gap if name != 'dense' else 0:.1e} |"
            )
        print(
            f"| {classes:,} | sparse / dense | {sparse['posteriors_s'] / dense['posteriors_s']:.2f}x | "
            f"{sparse['bytes'] / dense['bytes']:.4f}x | {sparse['agreement_s'] / dense['agreement_s']:.2f}x | |"
        )


if __name__ == "__main__":
    main()
