"""Diffusion re-ranking: the sparse graph, the truncated solve against the dense one, the ranking;
the table of re-rankings and v0.4's spellings of them."""

from typing import get_args

import numpy as np
import pytest
from typer.testing import CliRunner

from competition.errors import CompeteError
from competition.retrieval.neighbours import neighbours_among
from competition.retrieval.posteriors import weighted_posteriors
from competition.retrieval.postprocess import describe, joint_rows, pool_ranking, scored_ranking
from competition.retrieval.rerank import RERANKINGS, re_ranking_of
from competition.retrieval.rerank.diffusion import diffuse, mutual_graph, walk_matrix
from competition.retrieval.rerank.graph import nearest
from competition.retrieval.vectors import l2_normalize
from competition.settings.choices import ReRanking
from competition.settings.submit import PostProcess, SubmitConfig


def _landmarks(seed=0, landmarks=20, photos=6, noise=0.2, dim=32):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(landmarks), photos)
    centres = l2_normalize(rng.normal(size=(landmarks, dim)))
    return l2_normalize(centres[labels] + noise * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def _map(ranking, labels, queries, relevant):
    hits = labels[ranking] == labels[queries][:, None]
    precision = np.cumsum(hits, axis=1) / np.arange(1, ranking.shape[1] + 1)
    return float(((precision * hits).sum(axis=1) / relevant).mean())


def test_the_graph_joins_only_mutual_neighbours_with_similarity_to_the_gamma():
    x, _ = _landmarks(photos=4)
    graph = mutual_graph(nearest(x, x, 3, same=True), 3, gamma=3.0).toarray()
    _, closest = neighbours_among(x, 3)
    chose = np.zeros_like(graph, bool)
    chose[np.repeat(np.arange(len(x)), 3), closest.ravel()] = True
    mutual = chose & chose.T & (x @ x.T > 0)
    assert np.array_equal(graph > 0, mutual) and np.allclose(graph, graph.T)
    assert np.allclose(graph[mutual], np.clip(x @ x.T, 0, None)[mutual] ** 3, atol=1e-6)


def test_an_untruncated_walk_is_the_dense_solution():
    x, _ = _landmarks(landmarks=6, photos=5)
    alpha = 0.8
    graph = nearest(x, x, len(x), same=True)
    dense = np.linalg.solve(walk_matrix(mutual_graph(graph, 5, 3.0), alpha).toarray(), np.eye(len(x)))
    scores, ranking = diffuse(graph, np.arange(len(x)), graph.indices, k=len(x) - 1, neighbours=5, alpha=alpha)
    for source in range(len(x)):
        others = np.delete(np.arange(len(x)), source)
        expected = others[np.argsort(-dense[others, source], kind="stable")]
        assert np.allclose(scores[source], dense[expected, source], atol=1e-4)
        assert np.allclose(dense[ranking[source], source], dense[expected, source], atol=1e-4)


def test_diffusion_finds_photos_of_the_query_landmark_that_cosine_ranks_low():
    x, labels = _landmarks(noise=0.2)
    queries = np.arange(len(x))
    cosine = neighbours_among(x, 10)[1]
    walked = pool_ranking(PostProcess(re_ranking="diffusion"), x, queries, 10)
    assert not (walked == queries[:, None]).any()  # never the photo itself
    assert _map(walked, labels, queries, 5) > _map(cosine, labels, queries, 5) + 0.05
    long_walk = pool_ranking(PostProcess(re_ranking="diffusion", diffusion_k=20, diffusion_alpha=0.99), x, queries, 10)
    assert _map(long_walk, labels, queries, 5) < _map(walked, labels, queries, 5)  # it wanders off the landmark


def test_submit_diffuses_the_gallery_in_the_joint_graph_with_or_without_label_fusion():
    x, labels = _landmarks()
    queries, gallery = x[::6], np.delete(x, np.arange(0, len(x), 6), axis=0)
    steps = PostProcess(re_ranking="diffusion", diffusion_truncate=20)
    scores, ranking = scored_ranking(steps, queries, gallery, 30)
    assert ranking.shape == (len(queries), 30) and ranking.max() < len(gallery)
    assert (np.diff(scores, axis=1) <= 1e-7).all() and all(len(set(r)) == 30 for r in ranking)  # k > truncate
    posteriors = np.eye(20, dtype=np.float32)[labels]
    fusion = (weighted_posteriors(posteriors[::6], 1.0), weighted_posteriors(np.delete(posteriors, np.s_[::6], 0), 1.0))
    rows = joint_rows(queries, gallery, fusion)
    cosine = joint_rows(queries, gallery)
    assert np.allclose(
        rows @ rows.T, (cosine @ cosine.T + np.concatenate(fusion) @ np.concatenate(fusion).T) / 2, atol=1e-6
    )
    fused = scored_ranking(steps, queries, gallery, 5, fusion=fusion)[1]
    gallery_labels = np.delete(labels, np.arange(0, len(x), 6))
    assert (gallery_labels[fused] == labels[::6][:, None]).all()  # the labels name every landmark here


def test_v04s_two_re_ranking_switches_still_load_as_the_one_choice():
    """v0.4 kept `rerank` and `diffusion` as two booleans: its config files, sweep files, leaderboard
    rows and run summaries (a run's chosen steps, merged over submit's own) still mean the same."""
    assert PostProcess(rerank=True).re_ranking == "k-reciprocal"
    assert PostProcess.from_dict({"diffusion": True, "rerank": False, "diffusion-k": 5}).re_ranking == "diffusion"
    v04_chosen = {"rerank": False, "diffusion": True, "diffusion_k": 20, "diffusion_alpha": 0.8, "qe": 0}
    merged = PostProcess.from_dict({**PostProcess().to_dict(), **v04_chosen})
    assert (merged.re_ranking, merged.diffusion_k) == ("diffusion", 20) and merged.given()
    assert describe(merged) == "diffusion k=20 α=0.8"
    assert PostProcess.from_dict({**PostProcess().to_dict(), "rerank": False, "diffusion": False}).re_ranking == "off"
    assert SubmitConfig.from_dict({"rerank": True}).postprocess.re_ranking == "k-reciprocal"
    with pytest.raises(CompeteError, match="--rerank and --diffusion each set --re-ranking: choose one"):
        PostProcess(rerank=True, diffusion=True)
    with pytest.raises(CompeteError, match="'rerank' must be true or false"):
        PostProcess.from_dict({"rerank": "yes"})


def test_every_declared_re_ranking_is_a_record_and_the_old_flags_name_the_new_one():
    from competition.cli import app

    assert set(RERANKINGS) == set(get_args(ReRanking)) - {"off"}
    for name, kind in RERANKINGS.items():
        record = re_ranking_of(PostProcess(re_ranking=name))
        assert isinstance(record, kind) and record.describe().startswith(name) and record.width >= 1
    assert re_ranking_of(PostProcess()) is None
    runner = CliRunner()
    printed = runner.invoke(app, ["submit", "--diffusion", "--print-config"])
    assert printed.exit_code == 0 and "re-ranking: diffusion" in printed.stdout
    assert "--diffusion is deprecated, use --re-ranking diffusion" in printed.stderr
    twice = runner.invoke(app, ["submit", "--rerank", "--re-ranking", "diffusion", "--print-config"])
    assert twice.exit_code == 1 and "--re-ranking is given twice" in twice.stderr
