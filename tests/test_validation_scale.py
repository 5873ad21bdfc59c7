"""Validation on neighbours, not matrices: exact top-k in blocks gives what the dense n x n
matrix gave, label fusion re-orders candidate lists as the dense fused matrix ranked, and a
pool past MOST_QUERIES is judged by a seeded sample of its queries against all of it."""

from collections import Counter

import numpy as np
import torch

from competition.evaluate.metrics import average_precision, relevance
from competition.retrieval.neighbours import neighbours_among
from competition.retrieval.posteriors import FUSION_CANDIDATES, posterior_agreement, rescore
from competition.retrieval.vectors import l2_normalize
from competition.train import validation
from competition.train.validation import MAP_K, PoolScores, pool_queries, score_pool, score_ranked


def _clustered(count=600, classes=40, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    centres = rng.standard_normal((classes, dim))
    vectors = (centres[labels] + 0.8 * rng.standard_normal((count, dim))).astype(np.float32)
    return vectors, np.array([f"c{label}" for label in labels]), rng.random(count) < 0.3


def _dense_rank_others(similarity, k):
    """The n x n path validation took before: every row's others, a stable sort of the matrix."""
    similarity = np.array(similarity, dtype=np.float64)
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def _dense_scores(similarity, labels, unseen):
    counts = Counter(labels.tolist())
    queries = np.array([counts[label] > 1 for label in labels])
    hits = relevance(_dense_rank_others(similarity, MAP_K)[queries], labels[queries], labels)
    relevant = np.array([counts[label] - 1 for label in labels[queries]])
    return PoolScores(hits[:, 0], average_precision(hits, MAP_K, relevant), unseen[queries])


def test_blocked_neighbours_score_a_pool_exactly_as_the_dense_matrix(monkeypatch):
    vectors, labels, unseen = _clustered()
    x = l2_normalize(vectors)
    dense = _dense_scores(x @ x.T, labels, unseen)
    blocked = score_pool(vectors, labels, unseen)
    assert np.array_equal(blocked.top1, dense.top1) and np.array_equal(blocked.unseen, dense.unseen)
    assert np.allclose(blocked.ap, dense.ap)
    _, small_blocks = neighbours_among(vectors, 25, block=7)
    assert np.array_equal(small_blocks, _dense_rank_others(x @ x.T, 25))
    # past NEIGHBOUR_CELLS similarities a block holds fewer rows: a large pool's block stays in memory
    monkeypatch.setattr("competition.retrieval.neighbours.NEIGHBOUR_CELLS", 3 * len(vectors))
    assert np.array_equal(neighbours_among(vectors, 25)[1], small_blocks)


def test_the_best_k_of_rows_full_of_ties_are_what_a_stable_sort_gives():
    from competition.retrieval.neighbours import best_first

    scores = np.random.default_rng(5).integers(0, 6, (400, 50)).astype(np.float32)  # ties at every boundary
    scores[:3] = 1.0  # all equal
    for k in (0, 1, 3, 10, 49, 50):
        assert np.array_equal(best_first(scores, k), np.argsort(-scores, axis=1, kind="stable")[:, :k])
    vectors, _, _ = _clustered(count=200, dim=4)
    vectors = np.round(vectors)  # duplicates: ties among neighbours
    x = l2_normalize(vectors)
    assert np.array_equal(neighbours_among(vectors, 30, block=13)[1], _dense_rank_others(x @ x.T, 30))


def test_label_fusion_on_candidates_ranks_as_the_dense_fused_matrix():
    vectors, labels, unseen = _clustered(count=300)
    rng = np.random.default_rng(1)
    posteriors = rng.dirichlet(np.ones(40) * 0.3, size=len(vectors)).astype(np.float32)
    queries = pool_queries(labels)
    assert FUSION_CANDIDATES >= len(vectors) - 1  # at this size the candidates are the whole pool
    cosine, candidates = neighbours_among(vectors, FUSION_CANDIDATES, queries)
    agreement = posterior_agreement(posteriors[queries], posteriors, candidates)
    x = l2_normalize(vectors)
    for weight in (0.0, 0.5, 4.0):
        fused = score_ranked(rescore(cosine, candidates, weight * agreement, MAP_K)[1], queries, labels, unseen)
        dense = _dense_scores(x @ x.T + weight * posteriors @ posteriors.T, labels, unseen)
        assert np.array_equal(fused.top1, dense.top1) and np.allclose(fused.ap, dense.ap)


def test_a_pool_past_most_queries_is_judged_by_a_seeded_sample_of_them(monkeypatch):
    vectors, labels, unseen = _clustered(count=500)
    monkeypatch.setattr(validation, "MOST_QUERIES", 120)
    queries = pool_queries(labels, most=120)
    assert len(queries) == 120 and np.array_equal(queries, pool_queries(labels, most=120))
    sampled = score_pool(vectors, labels, unseen)
    everyone = score_ranked(neighbours_among(vectors, MAP_K)[1], np.arange(500), labels, unseen)
    assert len(sampled.ap) == 120
    assert np.allclose(sampled.ap, everyone.ap[queries])  # each sampled query ranked against the whole pool


def test_faiss_finds_the_same_neighbours_with_the_same_tie_rule(monkeypatch):
    """Past FAISS_FROM candidates faiss.knn finds them; small integer vectors make every inner product
    exact in float32 (whatever the BLAS), so full of ties, both paths must agree to the index."""
    from competition.retrieval import neighbours

    rng = np.random.default_rng(3)
    vectors = rng.integers(-2, 3, (300, 6)).astype(np.float32)
    vectors[::7] = vectors[1]  # duplicates: ties among the best
    rows = np.arange(0, 300, 4)

    def every_case():
        return [neighbours_among(vectors, k, rows, normalize=False, start=s) for k in (1, 10, 40) for s in (0, 100)]

    def assert_as_dense(found):
        for (dense_scores, dense_order), (scores, order) in zip(dense, found):
            assert np.array_equal(order, dense_order) and np.array_equal(scores, dense_scores)

    dense = every_case()
    monkeypatch.setattr(neighbours, "FAISS_FROM", 1)
    assert_as_dense(every_case())
    with monkeypatch.context() as gpu:  # torch finds them on a GPU (mocked by the CPU): the same again
        gpu.setattr(neighbours, "cuda_device", lambda rows, dim: torch.device("cpu"))
        gpu.setattr(neighbours.faiss, "knn", None)
        assert_as_dense(every_case())
    monkeypatch.setattr(neighbours, "TIE_MARGIN", 0)  # every row's tie runs past what faiss found: dense rows
    assert np.array_equal(neighbours_among(vectors, 10, rows, normalize=False)[1], dense[2][1])  # k=10, start=0


def _reference_whitening_and_prototypes(vectors, labels):
    """The fits as they were on whole arrays (class means by a loop; prototypes by np.add.at)."""
    unit = l2_normalize(vectors).astype(np.float64)
    classes = sorted(set(labels))
    groups = [unit[labels == c] for c in classes]
    offsets = np.concatenate([group - group.mean(0) for group in groups if len(group) > 1])
    sums = np.zeros((len(classes), vectors.shape[1]))
    np.add.at(sums, [classes.index(label) for label in labels], unit)
    return unit.mean(0), offsets, l2_normalize(sums.astype(np.float32))


def test_fits_read_a_block_of_rows_at_a_time_and_give_what_whole_arrays_gave(monkeypatch):
    """Google Landmarks size: class means, the whitening and the prototypes are reduced over
    blocks of rows taken by index from a float16 matrix, never a copy of a fold's photos."""
    from competition.retrieval import posteriors, vectors as vectors_module
    from competition.retrieval.vectors import Rows, float16_if_exact
    from competition.train.whitening import fit_learned_whitening, within_class_offsets

    vectors, labels, _ = _clustered(count=700, classes=60, dim=24)
    monkeypatch.setattr(vectors_module, "ROWS_AT_ONCE", 64)  # 11 blocks
    monkeypatch.setattr(posteriors, "LOGISTIC_MOST_CLASSES", 10)  # prototypes past 10 classes
    held = float16_if_exact(vectors.astype(np.float16).astype(np.float32))
    assert held.dtype == np.float16 and float16_if_exact(vectors) is vectors  # float32 values stay float32
    train = np.random.default_rng(1).permutation(700)[:500]
    rows, exact = Rows(held, train), held[train].astype(np.float32)
    mean, offsets, prototypes = _reference_whitening_and_prototypes(exact, labels[train])

    by_rows = fit_learned_whitening(rows, labels[train])
    assert np.allclose(by_rows[0], mean, atol=1e-6)
    assert np.allclose(np.sort(within_class_offsets(Rows(held, train, l2_normalize), labels[train]), 0),
                       np.sort(offsets, 0), atol=1e-6)  # fmt: skip
    whole = fit_learned_whitening(exact, labels[train])
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(by_rows[:2], whole[:2])) and by_rows[2] == whole[2]
    doubled = posteriors.fit_label_classifier(Rows(held, train, lambda x: 2 * x), labels[train])
    assert doubled.sparse and np.allclose(doubled.prototypes, prototypes, atol=1e-6)
    assert len(Rows(held, train)) == 500 and Rows(held, train).whole().dtype == np.float32


def test_a_runs_features_are_held_once_as_float16_and_its_photos_are_that_matrix():
    from pathlib import Path

    from competition.data.discover import ImageRecord
    from competition.train.photo_features import PhotoFeatures

    records = [ImageRecord(Path(f"/photos/{i}.jpg"), f"{i}.jpg", "train", f"l{i % 2}") for i in range(5)]
    stored = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float16).astype(np.float32)
    features = PhotoFeatures.of(records, stored, unreadable={records[2].path})
    kept = [r for r in records if r.path in features]
    assert features.matrix.dtype == np.float16 and len(features) == 4 and records[2].path not in features
    assert features.stacked(kept) is features.matrix  # the run's photos: no copy
    assert np.array_equal(features.stacked(kept[::-1]), stored[[4, 3, 1, 0]])
    rows, labels = features.rows(records)  # the unreadable one left out
    assert np.array_equal(rows.whole(), stored[[0, 1, 3, 4]]) and list(labels) == ["l0", "l1", "l1", "l0"]


def test_one_product_gives_the_prototype_posteriors_at_every_strength(monkeypatch):
    """Validation's grid over strengths at 81k landmarks: the logits only scale, so one product of
    the photos with the prototypes serves both strengths, as two classifiers would have."""
    from competition.retrieval import posteriors

    monkeypatch.setattr(posteriors, "LOGISTIC_MOST_CLASSES", 10)
    vectors, labels, _ = _clustered(count=600, classes=40, dim=32)
    fitted = {c: posteriors.fit_label_classifier(vectors, labels, c) for c in (10.0, 100.0)}
    shared = fitted[10.0].posteriors_at(vectors[:50], (10.0, 100.0))
    for strength, classifier in fitted.items():
        alone = classifier.posteriors(vectors[:50]).toarray()
        assert np.allclose(shared[strength].toarray(), alone, atol=1e-5) and alone.max() > 0.1
    assert not np.allclose(shared[10.0].toarray(), shared[100.0].toarray(), atol=1e-3)


def test_a_cuda_device_makes_the_prototype_posteriors_with_torch_as_numpy_makes_them(monkeypatch):
    """On a GPU the 760k x 81k products are seconds: torch makes them there. Its path, run here on
    the CPU, keeps the same top classes with the same posteriors; only a CUDA device takes it."""
    import torch

    from competition.retrieval import posteriors

    monkeypatch.setattr(posteriors, "LOGISTIC_MOST_CLASSES", 10)
    monkeypatch.setattr(posteriors, "DEVICE_ROWS_AT_ONCE", 32)  # blocks joined as numpy's are
    vectors, labels, _ = _clustered(count=600, classes=40, dim=32)
    classifier = posteriors.fit_label_classifier(vectors, labels, 10.0)
    on_numpy = classifier.posteriors_at(vectors[:100], (10.0, 100.0))
    by_torch = posteriors.sparse_posteriors_on(
        torch.device("cpu"), vectors[:100], classifier.prototypes, (10.0, 100.0), "test", False
    )
    for strength, expected in on_numpy.items():
        made = by_torch[strength]
        assert made.shape == expected.shape and made.nnz == expected.nnz == 100 * posteriors.TOP_CLASSES
        assert np.array_equal(made.toarray() > 0, expected.toarray() > 0)  # the same top classes
        assert np.allclose(made.toarray(), expected.toarray(), rtol=1e-4, atol=1e-7)
    taken = []
    monkeypatch.setattr(posteriors, "sparse_posteriors_on", lambda device, *rest: taken.append(device) or by_torch)
    assert classifier.posteriors_at(vectors[:100], (10.0, 100.0), torch.device("cuda")) is by_torch
    for other in (None, torch.device("cpu")):
        again = classifier.posteriors_at(vectors[:100], (10.0, 100.0), other)[10.0]
        assert (again != on_numpy[10.0]).nnz == 0  # numpy's, bit for bit
    assert taken == [torch.device("cuda")]


def test_unit_rows_are_numpys_norm_bit_for_bit_from_any_stored_type():
    """Every ranking starts at l2_normalize: a faster sum must not move a single bit (ties, and the
    demo's submissions byte for byte); a zero row stays zero rather than NaN."""
    rng = np.random.default_rng(0)
    for rows in (
        rng.normal(size=(300, 1280)).astype(np.float16),
        rng.normal(size=(40, 7)),
        rng.normal(size=(9, 5))[:, ::2],
    ):
        rows[0] = 0
        as_float = np.ascontiguousarray(rows, np.float32)
        expected = as_float / np.maximum(np.linalg.norm(as_float, axis=1, keepdims=True), 1e-12)
        unit = l2_normalize(rows)
        assert unit.dtype == np.float32 and unit.flags.c_contiguous and np.array_equal(unit, expected)
        assert not unit[0].any() and np.allclose(np.linalg.norm(unit[1:], axis=1), 1, atol=1e-6)
