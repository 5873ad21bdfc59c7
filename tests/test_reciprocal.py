"""The re-ranking graph and sparse k-reciprocal re-ranking: the same as the textbook's dense
version, a graph built once per gallery, approximate past a size."""

import numpy as np
import pytest

from competition.errors import CompeteError
from competition.retrieval import search as search_module
from competition.retrieval.posteriors import weighted_posteriors
from competition.retrieval.postprocess import joint_rows, pool_ranking, scored_ranking
from competition.retrieval.rerank import graph as graphs
from competition.retrieval.rerank.graph import gallery_graph, joint_graph, nearest
from competition.retrieval.vectors import l2_normalize
from competition.settings.submit import PostProcess


def textbook_k_reciprocal(similarity, num_queries, k1, k2, lambda_value=0.3):
    """Zhong et al.'s dense re-ranking as their code writes it (the joint set's (n, n) matrices):
    the reference the sparse version must equal."""
    total = len(similarity)
    original = np.clip(2 - 2 * similarity, 0, None)
    original = original / np.maximum(original.max(axis=1, keepdims=True), 1e-12)
    ranks = np.argsort(original, axis=1, kind="stable")

    def reciprocal(index, k):
        forward = ranks[index, : k + 1]
        return forward[np.any(ranks[forward, : k + 1] == index, axis=1)]

    weights = np.zeros_like(original)
    for i in range(total):
        own = reciprocal(i, k1)
        expansion = own
        for candidate in own:
            theirs = reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(theirs, own)) > 2 / 3 * len(theirs):
                expansion = np.append(expansion, theirs)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        weights[i, expansion] = weight / weight.sum()
    if k2 > 1:
        weights = np.stack([weights[ranks[i, :k2]].mean(axis=0) for i in range(total)])
    jaccard = np.zeros((num_queries, total))
    for i in range(num_queries):
        shared = np.minimum(weights[i][None, :], weights).sum(axis=1)
        jaccard[i] = 1 - shared / (2 - shared)
    return jaccard * (1 - lambda_value) + original[:num_queries] * lambda_value


def _landmarks(seed=0, landmarks=40, photos=6, noise=0.3, dim=32):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(landmarks), photos)
    centres = l2_normalize(rng.normal(size=(landmarks, dim)))
    x = l2_normalize(centres[labels] + noise * rng.normal(size=(len(labels), dim))).astype(np.float32)
    return x[::photos], np.delete(x, np.s_[::photos], axis=0), labels


@pytest.mark.parametrize("k1, k2", [(8, 3), (4, 1), (20, 6)])
def test_sparse_k_reciprocal_equals_the_textbook_dense_version(k1, k2):
    queries, gallery, _ = _landmarks()
    rows = joint_rows(queries, gallery)
    dense = textbook_k_reciprocal(rows @ rows.T, len(queries), k1, k2)[:, len(queries) :]
    expected = np.argsort(dense, axis=1, kind="stable")[:, :50]
    scores, ranking = scored_ranking(
        PostProcess(re_ranking="k-reciprocal", rerank_k1=k1, rerank_k2=k2), queries, gallery, 50
    )
    assert np.array_equal(ranking, expected)
    assert np.allclose(-scores, np.take_along_axis(dense, expected, axis=1), atol=1e-6)


def test_sparse_k_reciprocal_with_label_fusion_and_in_a_pool_equals_the_dense_version():
    queries, gallery, labels = _landmarks(seed=1)
    posteriors = np.eye(40, dtype=np.float32)[labels] * 0.7 + 0.3 / 40
    fusion = tuple(weighted_posteriors(p, 0.5) for p in (posteriors[::6], np.delete(posteriors, np.s_[::6], 0)))
    rows = joint_rows(queries, gallery, fusion)
    dense = textbook_k_reciprocal(rows @ rows.T, len(queries), 8, 3)[:, len(queries) :]
    fused = scored_ranking(PostProcess(re_ranking="k-reciprocal"), queries, gallery, 30, fusion=fusion)[1]
    assert np.array_equal(fused, np.argsort(dense, axis=1, kind="stable")[:, :30])
    pool = np.concatenate([queries, gallery])
    within = textbook_k_reciprocal(pool @ pool.T, len(pool), 8, 3)[::5]
    within[np.arange(len(within)), np.arange(0, len(pool), 5)] = np.inf  # never the photo itself
    expected = np.argsort(within, axis=1, kind="stable")[:, :10]
    assert np.array_equal(
        pool_ranking(PostProcess(re_ranking="k-reciprocal"), pool, np.arange(0, len(pool), 5), 10), expected
    )


def test_the_joint_graph_is_the_graph_of_all_photos_together():
    queries, gallery, _ = _landmarks(seed=2)
    joint, candidates = joint_graph(queries, gallery, k=12, depth=30, kind="exact")
    everyone = np.concatenate([queries, gallery])
    whole = nearest(everyone, everyone, 12, same=True)
    assert np.array_equal(joint.indices, whole.indices)
    assert np.allclose(joint.similarities, whole.similarities, atol=1e-6)
    assert np.allclose(joint.lowest, (everyone @ everyone.T).min(axis=1), atol=1e-6)
    assert np.array_equal(candidates - len(queries), nearest(queries, gallery, 30).indices)


def test_a_gallery_graph_is_built_once_and_read_back(tmp_path, monkeypatch):
    _, gallery, _ = _landmarks(seed=3)
    built = gallery_graph(gallery, 10, "exact", tmp_path)
    assert built.width == graphs.GRAPH_K and len(list(tmp_path.glob("gallery-*.npz"))) == 1

    def no_search(*args, **kwargs):
        raise AssertionError("the cached graph should have been read")

    monkeypatch.setattr(graphs, "nearest", no_search)
    again = gallery_graph(gallery, 10, "exact", tmp_path)
    assert np.array_equal(again.indices, built.indices) and np.array_equal(again.lowest, built.lowest)
    with pytest.raises(AssertionError, match="cached graph"):  # another gallery is another graph
        gallery_graph(gallery[1:], 10, "exact", tmp_path)


def test_past_the_size_for_exact_search_the_graph_is_approximate_and_close(monkeypatch):
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(100), 20)
    x = l2_normalize(rng.normal(size=(100, 32))[labels] + 0.5 * rng.normal(size=(2000, 32))).astype(np.float32)
    monkeypatch.setattr(search_module, "APPROXIMATE_FROM", 1000)
    assert graphs.graph_kind("auto", 2000, 999) == "ivf" and graphs.graph_kind("exact", 2000, 999) == "exact"
    # a graph's rows are many queries at once: exact, whatever index the final search uses
    assert graphs.graph_kind("ivf", 2000, 2000) == "exact"
    approximate, exact = nearest(x, x, 10, "ivf", same=True), nearest(x, x, 10, same=True)
    assert not (approximate.indices == np.arange(2000)[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate.indices, exact.indices)])
    assert 0.7 < recall < 1.0
    every_cell = nearest(x, x, 10, "ivf", same=True, nprobe=10_000)  # the user's --nprobe reaches the graph
    assert np.array_equal(every_cell.indices, exact.indices)


def test_re_ranking_with_sparse_label_posteriors_is_refused_with_the_way_out():
    from scipy import sparse

    queries, gallery, _ = _landmarks(seed=5, landmarks=4)
    fusion = (sparse.csr_matrix(np.ones((len(queries), 3))), sparse.csr_matrix(np.ones((len(gallery), 3))))
    with pytest.raises(CompeteError, match="--qe / --dba, or --landmarks new"):
        scored_ranking(PostProcess(re_ranking="k-reciprocal"), queries, gallery, 5, fusion=fusion)


def test_an_unreadable_cached_graph_is_built_again_and_one_query_re_ranks(tmp_path, caplog):
    queries, gallery, _ = _landmarks(seed=6, landmarks=5)
    built = gallery_graph(gallery, 10, "exact", tmp_path)
    (cached,) = tmp_path.glob("gallery-*.npz")
    cached.write_bytes(b"not a graph")
    again = gallery_graph(gallery, 10, "exact", tmp_path)
    assert "cannot be read" in caplog.text and np.array_equal(again.indices, built.indices)
    for steps in (PostProcess(re_ranking="k-reciprocal"), PostProcess(re_ranking="diffusion")):
        assert scored_ranking(steps, queries[:1], gallery[:1], 10)[1].tolist() == [[0]]
        assert sorted(scored_ranking(steps, queries[:1], gallery, 50)[1][0]) == list(range(len(gallery)))
