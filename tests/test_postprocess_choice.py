"""Post-processing chosen by validation: pools ranked after each step, the choice, and submit using it."""

import json

import numpy as np
import pytest
from conftest import tiny_config, tiny_submit_config

from competition.retrieval.neighbours import neighbours_among
from competition.retrieval.postprocess import describe, pool_ranking
from competition.runs import SUMMARY
from competition.settings.submit import PostProcess
from competition.submit.run import submit
from competition.train.describe import describe_run
from competition.train.folds import class_folds
from competition.train.loop import train
from competition.train.postprocess_choice import CANDIDATES, choose_postprocess


def _pool(seed=0, landmarks=10, photos=8, noise=0.9):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(landmarks), photos)
    vectors = rng.normal(size=(landmarks, 16))[labels] + noise * rng.normal(size=(len(labels), 16))
    return vectors.astype(np.float32), labels.astype(str)


def test_a_pool_without_steps_ranks_as_its_nearest_neighbours():
    vectors, _ = _pool()
    queries = np.arange(0, 80, 3)
    assert np.array_equal(pool_ranking(PostProcess(), vectors, queries, 10), neighbours_among(vectors, 10, queries)[1])


def test_a_pool_re_ranked_never_ranks_a_photo_against_itself():
    vectors, _ = _pool(landmarks=4, photos=5)
    queries = np.arange(20)
    ranking = pool_ranking(PostProcess(re_ranking="k-reciprocal"), vectors, queries, 19)
    assert not (ranking == queries[:, None]).any()
    assert all(len(set(row)) == 19 for row in ranking)  # every other photo, once


def test_validation_chooses_a_step_only_when_its_gain_is_clear():
    vectors, labels = _pool(noise=1.1)
    folds = class_folds(labels, folds=2, seed=0)
    pools = [(vectors[f.pool], f) for f in folds]
    chosen = choose_postprocess(pools, labels)
    assert set(chosen["against_none"]) == {describe(steps) for steps in CANDIDATES}
    assert chosen["against_none"]["none"]["map@10"] == [0.0, 0.0, 0.0]
    gain = chosen["against_none"][chosen["chosen"]]["map@10"]
    assert chosen["chosen"] != "none" and gain[1] > 0  # several photos a landmark: expansion pays here
    assert describe(PostProcess.from_dict(chosen["steps"])) == chosen["chosen"]
    noise = np.random.default_rng(5).normal(size=vectors.shape).astype(np.float32)  # no landmark to find
    assert choose_postprocess([(noise[f.pool], f) for f in folds], labels)["chosen"] == "none"


def test_pools_too_large_to_re_rank_are_not_judged(monkeypatch):
    vectors, labels = _pool()
    folds = class_folds(labels, folds=2, seed=0)
    monkeypatch.setattr("competition.train.postprocess_choice.POOL_MAX", 10)
    assert choose_postprocess([(vectors[f.pool], f) for f in folds], labels) == {}


@pytest.mark.parametrize(
    "given, landmarks, expected",
    [
        ({}, "auto", "α-QE k=2 α=3 (chosen by run's validation)"),
        ({"qe": 1}, "auto", "α-QE k=1 α=3"),
        ({"from_run": False}, "auto", "none"),
        ({}, "known", "none"),  # the choice was judged on cosine rankings, not on labels at full weight
    ],
)
def test_submit_runs_the_steps_the_run_chose_unless_told_otherwise(
    tiny_competition, tmp_path, given, landmarks, expected
):
    train(tiny_config(tiny_competition, tmp_path / "runs", "run"), progress=False)
    summary_path = tmp_path / "runs" / "run" / SUMMARY
    summary = json.loads(summary_path.read_text())
    assert summary["postprocess"]["chosen"] in {describe(steps) for steps in CANDIDATES}
    lines = describe_run(summary, "runs")[0]
    assert any(line.startswith("  post-processing submit will run (but for --landmarks known): ") for line in lines)
    summary["record"]["postprocess"] = PostProcess(qe=2).to_dict()
    summary_path.write_text(json.dumps(summary))
    config = tiny_submit_config(tiny_competition, tmp_path, landmarks=landmarks, postprocess=PostProcess(**given))
    assert submit(config, progress=False).record["postprocess"] == expected
