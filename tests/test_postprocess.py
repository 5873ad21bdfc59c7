"""Post-processing: each step on a tiny case where it must change the ranking, plus its defining property."""

import numpy as np
import pytest

from competition.errors import CompeteError
from competition.retrieval.postprocess import (
    database_augmentation,
    describe,
    learn_pca_whitening,
    query_expansion,
    rank,
)
from competition.retrieval.search import search
from competition.retrieval.vectors import l2_normalize
from competition.settings.submit import PostProcess


def at_angle(degrees: float) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.array([np.cos(radians), np.sin(radians)], dtype=np.float32)


def clusters(seed: int):
    """3 landmarks x 4 gallery photos and 1 query each, in 8-D with heavy noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 8))
    gallery_labels = np.repeat(np.arange(3), 4)
    gallery = centers[gallery_labels] + rng.normal(size=(12, 8)) * 0.9
    queries = centers + rng.normal(size=(3, 8)) * 0.9
    return queries.astype(np.float32), gallery.astype(np.float32), np.arange(3), gallery_labels


def correct_top1(ranking, query_labels, gallery_labels) -> int:
    return int((gallery_labels[ranking[:, 0]] == query_labels).sum())


def test_query_expansion_pulls_the_query_towards_its_top_match():
    query = at_angle(0)[None]
    gallery = np.stack([at_angle(10), at_angle(-20), at_angle(25)])  # A, B, A
    assert search(query, gallery, 3)[1][0].tolist() == [0, 1, 2]
    expanded = query_expansion(query, gallery, k=1, alpha=3.0)
    weight = np.cos(np.deg2rad(10)) ** 3
    assert np.allclose(expanded[0], l2_normalize((at_angle(0) + weight * at_angle(10))[None])[0], atol=1e-6)
    assert search(expanded, gallery, 3)[1][0].tolist() == [0, 2, 1]  # the second A now beats B


def test_database_augmentation_averages_each_image_with_its_neighbours():
    gallery = np.stack([at_angle(0), at_angle(10), at_angle(90)])
    augmented = database_augmentation(gallery, k=2, alpha=0.0)  # alpha 0: plain mean of self + nearest
    assert np.allclose(augmented[0], at_angle(5), atol=1e-6) and np.allclose(augmented[1], at_angle(5), atol=1e-6)
    assert np.allclose(augmented[2], l2_normalize((at_angle(90) + at_angle(10))[None])[0], atol=1e-6)


def test_whitening_decorrelates_what_it_was_learned_on():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 6)) * np.array([10, 5, 1, 1, 0.5, 0.1]) + rng.normal(size=6)
    whitening = learn_pca_whitening(data)
    projected = whitening.pca.transform(l2_normalize(data)) / np.sqrt(whitening.pca.explained_variance_)
    assert np.allclose(np.cov(projected.T), np.eye(6), atol=1e-4)  # unit variance, no correlation
    assert np.allclose(whitening(data), l2_normalize(projected), atol=1e-5)  # then back on the sphere
    softer = learn_pca_whitening(data, power=0.5)(data)
    assert not np.allclose(softer, whitening(data), atol=1e-3)


@pytest.mark.parametrize(
    "steps, seed",
    [
        (PostProcess(pca_whiten="gallery", pca_whiten_power=1.0), 21),
        (PostProcess(dba=3, alpha=1.0), 11),
        (PostProcess(re_ranking="k-reciprocal"), 8),  # the defaults, k1=8 k2=3
    ],
)
def test_each_step_changes_the_ranking_for_the_better_on_a_noisy_case(steps, seed):
    queries, gallery, query_labels, gallery_labels = clusters(seed)
    before = correct_top1(search(queries, gallery, 1)[1], query_labels, gallery_labels)
    after = correct_top1(rank(steps, queries, gallery, 1), query_labels, gallery_labels)
    assert after == before + 1, describe(steps)


def test_description_names_every_step_in_order():
    steps = PostProcess(pca_whiten="query+gallery", pca_whiten_dim=64, dba=2, qe=2, alpha=3, re_ranking="k-reciprocal")
    assert (
        describe(steps) == "PCA-whiten(query+gallery, 64-d, power 0.5), DBA k=2, α-QE k=2 α=3, k-reciprocal k1=8 k2=3"
    )
    assert describe(PostProcess()) == "none"


def test_neighbour_expansion_by_faiss_equals_the_dense_formula():
    rng = np.random.default_rng(4)
    queries, gallery = (l2_normalize(rng.standard_normal((n, 16)).astype(np.float32)) for n in (30, 200))
    similarity = queries @ gallery.T
    order = np.argsort(-similarity, axis=1)[:, :3]
    weights = np.clip(np.take_along_axis(similarity, order, axis=1), 0, None) ** 3.0
    dense = l2_normalize(queries + np.einsum("nk,nkd->nd", weights, gallery[order]))
    assert np.allclose(query_expansion(queries, gallery, k=3, alpha=3.0), dense, atol=1e-5)


def test_large_inputs_use_a_whitening_sample_and_refuse_re_ranking_past_the_memory(monkeypatch):
    from competition.retrieval import postprocess
    from competition.retrieval.rerank import memory

    monkeypatch.setattr(postprocess, "WHITEN_SAMPLE", 50)
    vectors = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    whitening = postprocess.learn_pca_whitening(vectors)
    assert whitening.pca.n_samples_ == 50 and whitening(vectors).shape == (400, 8)
    reranking = PostProcess(re_ranking="k-reciprocal")
    needed = memory.rerank_bytes(reranking, 10, 400)
    assert needed == 2 * memory.rerank_bytes(reranking, 5, 200)  # linear in the photos
    assert memory.rerank_bytes(reranking, 10, 40_000) < 0.2e9  # the dense distances held 12.8 GB
    monkeypatch.setattr(memory, "machine_memory", lambda: needed - 1)
    with pytest.raises(CompeteError, match=r"k-reciprocal re-ranking of 10 queries and 400 gallery .* by estimate"):
        rank(reranking, vectors[:10], vectors, k=5)
    rank(reranking, vectors[:10], vectors[:50], k=5)  # under the limit: fine
    with pytest.raises(CompeteError, match="diffusion re-ranking of 10 queries"):
        rank(PostProcess(re_ranking="diffusion", diffusion_k=100), vectors[:10], vectors, k=5)


def _scene(seed: int, size=(360, 480)) -> np.ndarray:
    """A textured synthetic 'building': random rectangles, circles and lines, rich in corners."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), 128, np.uint8)
    for _ in range(120):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
        w, h = int(rng.integers(8, 60)), int(rng.integers(8, 60))
        shape = rng.integers(0, 3)
        if shape == 0:
            cv2.rectangle(image, (x, y), (x + w, y + h), colour, -1)
        elif shape == 1:
            cv2.circle(image, (x, y), w // 2, colour, -1)
        else:
            cv2.line(image, (x, y), (x + w, y + h), colour, 3)
    return image


def test_geometric_verification_tells_the_same_scene_shifted_from_another_scene(tmp_path):
    from PIL import Image

    from competition.retrieval.embed import file_key
    from competition.retrieval.verify import LocalFeatureCache, Verification, count_inliers, verify_ranking

    scene = _scene(0)
    paths = {
        "query": scene[20:340, 30:460],
        "same-shifted": scene[0:320, 0:430],  # the same scene, framed 20 px up and 30 px left
        "other": _scene(1)[20:340, 30:460],
    }
    for name, pixels in paths.items():
        Image.fromarray(pixels).save(tmp_path / f"{name}.jpg", quality=95)
    files = {name: tmp_path / f"{name}.jpg" for name in paths}
    cache = LocalFeatureCache(tmp_path / "cache")
    features = {name: cache.get(path, file_key(path)) for name, path in files.items()}
    same = count_inliers(features["query"], features["same-shifted"])
    other = count_inliers(features["query"], features["other"])
    assert same >= 50 and other < 15, (same, other)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3  # cached, one file a photo

    # the global ranking puts the other scene first; verification brings the same scene up
    gallery = [files["other"], files["same-shifted"]]
    ranking = np.array([[0, 1]])
    reranked, cost = verify_ranking(
        ranking,
        np.array([[0.80, 0.75]]),
        [files["query"]],
        gallery,
        Verification(top=2, weight=0.5),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert reranked.tolist() == [[1, 0]] and cost["per_query_s"] > 0
    # the bonus is bounded by its weight: a clear global order (0.95 vs 0.50) stays
    kept, _ = verify_ranking(
        ranking,
        np.array([[0.95, 0.50]]),
        [files["query"]],
        gallery,
        Verification(top=2, weight=0.1),
        progress=False,
    )
    assert kept.tolist() == [[0, 1]]
    assert Verification(min_inliers=15, saturation=60, weight=0.5).bonus(np.array([14, 30, 600])).tolist() == [
        0.0,
        0.25,
        0.5,
    ]


def test_an_ivf_probing_every_cell_is_exact_and_fewer_probes_trade_recall(monkeypatch):
    from competition.retrieval import search as search_module
    from competition.retrieval.search import Searcher, recall_against_exact

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16)).astype(np.float32)
    gallery = l2_normalize(centres[rng.integers(0, 40, 4000)] + rng.normal(size=(4000, 16)).astype(np.float32))
    queries = l2_normalize(centres[rng.integers(0, 40, 50)] + rng.normal(size=(50, 16)).astype(np.float32))
    recalls = {}
    for nprobe in (1, 10_000):  # one cell, then (capped) every cell
        searcher = Searcher("ivf", 20, nprobe=nprobe)
        _, ranking = search(queries, gallery, 20, index=searcher)
        recalls[searcher.nprobe_used] = recall_against_exact(queries, gallery, ranking, 20)
    (one, _), (every, exact) = sorted(recalls.items())
    assert one == 1 and every > 1 and exact == 1.0 and recalls[1] < 1.0
    factory = Searcher(factory="IVF16,Flat", nprobe=16)
    assert recall_against_exact(queries, gallery, search(queries, gallery, 20, index=factory)[1], 20) == 1.0
    assert factory.describe() == "IVF16,Flat, nprobe 16"
    with pytest.raises(CompeteError, match="index-factory 'IVF,Nonsense'"):
        search(queries, gallery, 5, index=Searcher(factory="IVF,Nonsense"))
    # α-QE and the final search share the post-DBA gallery's index: built once; DBA's own gallery once more
    builds = []
    real_build = search_module.build_index
    monkeypatch.setattr(search_module, "build_index", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    rank(PostProcess(qe=2), queries, gallery, 10, index=Searcher("ivf", 10))
    assert len(builds) == 1
    rank(PostProcess(qe=2, dba=2), queries, gallery, 10, index=Searcher("ivf", 10))
    assert len(builds) == 3


def test_a_large_gallery_is_indexed_and_searched_without_whole_copies(monkeypatch):
    """At 760k gallery photos x 1280-d a unit copy made to fill the index was a third 4 GB copy of
    the gallery, and the searched batches joined at the end held 117k queries' top-1000 twice."""
    import tracemalloc

    from competition.retrieval import vectors
    from competition.retrieval.search import build_index, search_index

    monkeypatch.setattr(vectors, "ROWS_AT_ONCE", 1000)  # the gallery in 40 blocks
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(40000, 64)).astype(np.float32)
    queries = l2_normalize(rng.normal(size=(4000, 64)))
    tracemalloc.start()
    index = build_index(gallery, "exact")  # faiss's own copy is not Python's memory: not counted
    building = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    similarities, found = search_index(index, queries, 100, batch_size=500)
    searching = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert building < gallery.nbytes / 4 and searching < 1.3 * (similarities.nbytes + found.nbytes)
    assert np.array_equal(found[:, 0], np.argmax(queries @ l2_normalize(gallery).T, axis=1))


def test_a_search_of_several_batches_reports_its_progress_when_asked(monkeypatch, capsys):
    """117k queries x 760k photos search for minutes: submit's Searcher says where it is."""
    from competition import progress
    from competition.retrieval.search import Searcher

    monkeypatch.setattr(progress, "PIPED_EVERY", 0.0)
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(200, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    found = search(queries, gallery, 5, batch_size=10, index=Searcher(progress=True))[1]
    assert "search of 30 queries among 200 photos: 3/3 batch" in capsys.readouterr().err
    assert np.array_equal(found, search(queries, gallery, 5)[1])
    search(queries, gallery, 5, batch_size=10, index=Searcher())  # not asked: silent
    search(queries[:10], gallery, 5, batch_size=10, index=Searcher(progress=True))  # one batch: silent
    assert capsys.readouterr().err == ""
