"""The kind of competition (--landmarks): closed-set validation, posterior fusion, the auto estimate, the guard."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_submit_config

from competition.models.checkpoint import load_checkpoint
from competition.retrieval.landmarks import KNOWN_FROM, KnownGate, calibrate_known, estimate_known_share
from competition.retrieval.posteriors import LabelClassifier, fit_label_classifier, weighted_posteriors
from competition.retrieval.postprocess import scored_ranking
from competition.retrieval.vectors import l2_normalize
from competition.runs import BEST, SUMMARY, Judgement, RunRecord, Verdict
from competition.settings.model import ModelSettings
from competition.settings.submit import PostProcess
from competition.submit.models import LoadedModel, guard_unseen
from competition.submit.run import submit
from competition.train.folds import class_folds
from competition.train.label_fusion import choose_gate
from competition.train.loop import train


def test_closed_folds_hold_out_photos_of_every_landmark_and_no_landmark_whole():
    labels = np.repeat([f"c{i}" for i in range(6)], [4, 5, 8, 9, 12, 3])
    folds = class_folds(labels, folds=4, seed=0, hold_out_landmarks=False)
    queried = set()
    for fold in folds:
        assert not fold.unseen.any()
        assert set(fold.train.tolist()).isdisjoint(fold.pool.tolist())
        for label in set(labels[fold.pool]):  # every pooled landmark trains too, with >= 2 photos
            assert (labels[fold.train] == label).sum() >= 2 and (labels[fold.pool] == label).sum() >= 2
        queried |= set(fold.pool.tolist())
    assert {labels[i] for i in queried} == {f"c{i}" for i in range(5)}  # c5 (3 photos) can lend none
    # over the folds each photo of a landmark takes its turn as a query (12 photos, 3 lent per fold)
    assert queried >= set(np.flatnonzero(labels == "c4").tolist())
    assert [f.pool.tolist() for f in folds] != [folds[0].pool.tolist()] * 4


def _two_landmark_classifier(weight: float) -> LabelClassifier:
    coef = np.array([[8.0, 0, 0], [0, 8.0, 0]], dtype=np.float32)  # landmark a along x, b along y
    return LabelClassifier(["a", "b"], coef, np.zeros(2, np.float32), weight=weight)


def test_a_query_classified_into_a_landmark_ranks_its_gallery_photos_first():
    classifier = _two_landmark_classifier(weight=1.0)
    query = np.array([[0.55, 0.35, 0.76]], dtype=np.float32)  # classified a (x > y)
    gallery = np.array([[0.9, 0.1, 0.42], [0.2, 0.45, 0.87]], dtype=np.float32)  # photo of a, photo of b
    cosine = l2_normalize(query) @ l2_normalize(gallery).T
    assert cosine[0, 1] > cosine[0, 0]  # by appearance alone the photo of b comes first
    posteriors_q, posteriors_g = classifier.posteriors(query), classifier.posteriors(gallery)
    assert classifier.classes[int(posteriors_q.argmax())] == "a"
    fusion = weighted_posteriors(posteriors_q, 1.0), weighted_posteriors(posteriors_g, 1.0)
    assert scored_ranking(PostProcess(), query, gallery, 2, fusion=fusion)[1][0].tolist() == [0, 1]
    assert scored_ranking(PostProcess(re_ranking="k-reciprocal"), query, gallery, 2, fusion=fusion)[1][0].tolist() == [
        0,
        1,
    ]


@pytest.mark.parametrize("gated", [False, True])
def test_fusion_on_candidates_ranks_exactly_as_the_dense_fused_score(gated):
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(20, 16)), rng.normal(size=(60, 16))
    posteriors_q, posteriors_g = rng.dirichlet(np.ones(5) * 0.3, 20), rng.dirichlet(np.ones(5) * 0.3, 60)
    gate_q, gate_g = (rng.uniform(size=20), rng.uniform(size=60)) if gated else (np.ones(20), np.ones(60))
    dense = l2_normalize(queries) @ l2_normalize(gallery).T
    dense += 2.0 * (gate_q[:, None] * posteriors_q) @ (gate_g[:, None] * posteriors_g).T
    fusion = weighted_posteriors(posteriors_q, 2.0, gate_q), weighted_posteriors(posteriors_g, 2.0, gate_g)
    scores, order = scored_ranking(PostProcess(), queries, gallery, 10, fusion=fusion)
    assert np.array_equal(order, np.argsort(-dense, axis=1, kind="stable")[:, :10])
    assert np.allclose(scores, np.take_along_axis(dense, order, axis=1), atol=1e-5)


def test_two_landmarks_get_real_posteriors():  # scikit-learn keeps a single logit for two classes
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(10, 4)) + [3, 0, 0, 0], rng.normal(size=(10, 4)) - [3, 0, 0, 0]])
    classifier = fit_label_classifier(x, ["a"] * 10 + ["b"] * 10)
    posteriors = classifier.posteriors(x)
    assert posteriors.shape == (20, 2) and np.allclose(posteriors.sum(axis=1), 1)
    assert (posteriors[:10, 0] > 0.5).all() and (posteriors[10:, 1] > 0.5).all()


def test_classifier_survives_a_weights_only_checkpoint(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    classifier = fit_label_classifier(x, ["a"] * 6 + ["b"] * 6, strength=10)
    classifier.weight, classifier.calibration = 0.5, {"threshold": 0.6, "tpr": 0.9, "fpr": 0.1}
    classifier.gate, classifier.gated_weight = KnownGate((4.0, 2.0), -3.0, 0.8), 0.25
    torch.save({"label_classifier": classifier.to_payload()}, tmp_path / "c.pt")
    loaded = LabelClassifier.from_payload(torch.load(tmp_path / "c.pt", weights_only=True)["label_classifier"])
    assert np.allclose(loaded.posteriors(x), classifier.posteriors(x))
    assert loaded.weight == 0.5 and loaded.calibration["tpr"] == 0.9 and loaded.classes == ["a", "b"]
    assert loaded.gate == classifier.gate and loaded.gated_weight == 0.25
    assert np.allclose(loaded.known_probability(x), classifier.known_probability(x))
    older = {k: v for k, v in classifier.to_payload().items() if k not in ("prototypes", "gate", "gated_weight")}
    assert LabelClassifier.from_payload(older).gate is None  # a run trained before the gate: no fusion on mixed


def _clusters(rng, centres, per_class, noise=0.1):
    labels = np.repeat(np.arange(len(centres)), per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1])), labels.astype(str)


@pytest.mark.parametrize("known_share, expected", [(1.0, "known"), (0.5, "mixed"), (0.0, "new")])
def test_auto_estimates_the_share_of_training_landmarks_among_queries(known_share, expected):
    rng = np.random.default_rng(1)
    centres = l2_normalize(rng.normal(size=(16, 32)))  # 8 landmarks train, 8 are never seen
    train_x, train_y = _clusters(rng, centres[:8], 10)
    folds = class_folds(train_y, folds=4, seed=0)
    calibration = choose_gate(train_x, train_y, folds, lambda _: lambda v: v, strength=10).calibration
    assert calibration["tpr"] - calibration["fpr"] > 0.5  # the test separates on held-out landmarks
    classifier = fit_label_classifier(train_x, train_y, 10)
    seen_queries = round(80 * known_share)
    seen_x, _ = _clusters(rng, centres[:8], 10)
    unseen_x, _ = _clusters(rng, centres[8:], 10)
    queries = np.concatenate([seen_x[:seen_queries], unseen_x[: 80 - seen_queries]])
    estimate = estimate_known_share(classifier.posteriors(queries).max(axis=1), calibration)
    assert estimate.choice == expected and abs(estimate.share - known_share) < 0.2
    assert estimate.low <= estimate.share <= estimate.high and str(round(estimate.share * 100)) in estimate.describe()


def test_calibration_picks_the_lowest_threshold_of_best_separation_as_one_pass_per_threshold_did():
    rng = np.random.default_rng(2)
    for decimals in (2, 6):  # many ties, few ties
        known = rng.random(3000) < 0.6
        top = np.round(np.where(known, rng.beta(5, 2, 3000), rng.beta(2, 5, 3000)), decimals)
        candidates = np.unique(top)
        passing = [(top[known] >= t).mean() - (top[~known] >= t).mean() for t in candidates]  # the old, quadratic way
        found = calibrate_known(top, known)
        assert found["threshold"] == candidates[int(np.argmax(passing))] and found["photos"] == 3000
        assert found["tpr"] - found["fpr"] == max(passing)


def test_calibration_that_cannot_tell_leaves_the_choice_mixed():
    assert calibrate_known(np.array([0.5, 0.6]), np.array([True, True])) == {}
    weak = {"threshold": 0.5, "tpr": 0.55, "fpr": 0.45}
    assert estimate_known_share(np.ones(50), weak).choice == "mixed" and KNOWN_FROM > 0.5
    assert "too weakly" in estimate_known_share(np.ones(50), weak).describe()
    # queries that pass less often than photos of no training landmark did: the calibration does
    # not describe them (the demo's CosFace run once read this as "0% (90% [0%, 0%])")
    calibration = {"threshold": 0.5, "tpr": 0.6, "fpr": 0.35}
    odd = estimate_known_share(np.array([0.9] * 50 + [0.1] * 150), calibration)
    assert odd.share is None and odd.choice == "mixed" and "25% of the queries pass" in odd.describe()
    plausible = estimate_known_share(np.array([0.9] * 75 + [0.1] * 125), calibration)  # 37.5%: near all new
    assert plausible.choice == "new" and plausible.low == 0.0 < plausible.high
    # more than validation's photos of training landmarks: a closed set (the run's classifier is
    # fitted on every photo, validation's on folds); a refusal here left realdev's closed-set copy mixed
    surer = estimate_known_share(np.array([0.9] * 190 + [0.1] * 10), calibration)
    assert surer.choice == "known" and surer.share == surer.low == 1.0


def _run_model(beats_unseen, beats_known, verdict="better") -> LoadedModel:
    return LoadedModel(
        label="run", embedder=None, settings=ModelSettings(image_size=32), frozen=True,
        record=RunRecord(
            regime="last", weights_origin="origin", augmentation="none",
            unseen=Judgement(beats_unseen, Verdict.of(verdict)), known=Judgement(beats_known, Verdict.of(verdict)),
        ),
    )  # fmt: skip


@pytest.mark.parametrize(
    "landmarks, beats_unseen, beats_known, kept",
    [
        ("known", False, True, "run"),  # lost on unseen landmarks: irrelevant when every query is known
        ("mixed", False, True, "efficientnet_lite0"),
        ("new", False, True, "efficientnet_lite0"),
        ("known", True, False, "efficientnet_lite0"),  # lost on held-out photos of its own landmarks
        ("mixed", True, False, "run"),
    ],
)
def test_the_guard_reads_the_validation_of_the_kind_of_competition(landmarks, beats_unseen, beats_known, kept):
    models, _, _ = guard_unseen([_run_model(beats_unseen, beats_known)], [1.0], "fallback", 0.0, landmarks)
    assert [m.label for m in models] == [kept]


def test_each_kind_validates_and_keeps_what_it_needs(tiny_competition, tmp_path):
    known = train(tiny_config(tiny_competition, tmp_path, "known", landmarks="known"), progress=False)
    assert set(known["validation"]) == {"seen", "unseen"} and known["validation"]["unseen"]["queries"] == 0
    assert known["validation"]["seen"]["queries"] > 0 and known["record"]["landmarks"] == "known"
    assert known["label_fusion"]["validation"]["seen"]["queries"] == known["validation"]["seen"]["queries"]
    new = train(tiny_config(tiny_competition, tmp_path, "new", landmarks="new"), progress=False)
    assert new["label_fusion"] == {} and load_checkpoint(tmp_path / "new" / BEST)["label_classifier"] is None
    # the record training built: what submit and describe read, the same from the file
    for summary, fused in ((known, known["label_fusion"]["validation"]), (new, new["validation"])):
        record = RunRecord.from_summary(summary, tmp_path)
        on_file = json.loads((tmp_path / summary["run"] / SUMMARY).read_text())
        assert record == RunRecord.from_summary(on_file, tmp_path) and record.landmarks == summary["run"]
        assert (record.regime, record.head, record.augmentation) == ("last", "whitening", "none")
        assert (
            record.weights_origin
            == json.loads((tmp_path / summary["run"] / "config.json").read_text())["weights_origin"]
        )
        assert record.unseen == Judgement.of(summary["validation"]["unseen"]) and record.known == Judgement.of(
            fused["seen"]
        )
        assert record.classifier.startswith("logistic regression") == (summary is known)
    auto = train(tiny_config(tiny_competition, tmp_path, "auto"), progress=False)
    assert auto["validation"]["unseen"]["queries"] > 0  # landmarks held out whole, as for mixed
    payload = load_checkpoint(tmp_path / "auto" / BEST)["label_classifier"]
    assert payload["classes"] == sorted(json.loads((tmp_path / "auto" / "config.json").read_text())["classes"])
    assert set(payload["calibration"]) >= {"threshold", "tpr", "fpr"} and payload["weight"] >= 0


def test_the_full_regime_keeps_a_label_classifier_on_its_final_embedding(tiny_competition, tmp_path):
    config = tiny_config(tiny_competition, tmp_path, "full", regime="full", landmarks="known", epochs=1)
    summary = train(config, progress=False)
    assert summary["label_fusion"]["validation"]["seen"]["queries"] > 0
    payload = load_checkpoint(tmp_path / "full" / BEST)
    classifier = LabelClassifier.from_payload(payload["label_classifier"])
    assert classifier.coef.shape == (4, payload["model"]["embedding_dim"])  # 4 landmarks, its embedding


@pytest.mark.parametrize("landmarks", ["known", "new"])
def test_submit_fuses_posteriors_only_for_known_landmarks(tiny_competition, tmp_path, landmarks):
    train(tiny_config(tiny_competition, tmp_path / "runs", "run"), progress=False)
    config = tiny_submit_config(tiny_competition, tmp_path, landmarks=landmarks, name=landmarks)
    result = submit(config, progress=False)
    assert result.record["landmarks"] == landmarks
    assert result.record["label_fusion"].startswith("class posteriors") == (landmarks == "known")
    assert "| landmarks |" in (tmp_path / "board.md").read_text()


def test_sweep_table_marks_rows_ranked_as_known_landmarks():
    from competition.sweep.results import results_table

    row = {"status": "done", "scores": {"top1": 0.5}, "seconds": 1}
    known = {"landmarks": "known (auto, 98% known)"}
    off_the_shelf = row | known | {"label": "o", "fused": False}  # no classifier: nothing fused
    table = results_table([row | known | {"label": "a", "fused": True}, row | {"label": "b"}, off_the_shelf])
    assert "| a [known] |" in table and "| b |" in table and "| o |" in table and "[known]: every query" in table


def test_the_gate_fuses_for_photos_of_training_landmarks_and_spares_the_others():
    rng = np.random.default_rng(3)
    centres = l2_normalize(rng.normal(size=(12, 24)))
    x, y = _clusters(rng, centres, 12, noise=0.2)  # cosine alone confuses some photos of each landmark
    folds = class_folds(y, folds=4, seed=0)
    chosen = choose_gate(x, y, folds, lambda _: lambda v: v, strength=10)
    assert chosen.gate is not None and chosen.gate.auc > 0.8 and chosen.weight > 0
    without, with_gate = chosen.summary["validation"]["without"], chosen.summary["validation"]["with"]
    assert with_gate["seen_map@10"] > without["seen_map@10"]  # training landmarks gain
    assert with_gate["unseen_map@10"] >= without["unseen_map@10"] - 0.01  # held-out ones keep their ranking


def test_a_weight_that_loses_on_held_out_landmarks_is_never_chosen():
    from competition.train.label_fusion import _does_not_lose_unseen
    from competition.train.validation import PoolScores

    unseen = np.array([False] * 30 + [True] * 30)
    base = PoolScores(np.ones(60, bool), np.full(60, 0.6), unseen)
    worse = PoolScores(np.ones(60, bool), np.where(unseen, 0.55, 0.9), unseen)  # seen +0.3, unseen -0.05
    same = PoolScores(np.ones(60, bool), np.where(unseen, 0.6, 0.9), unseen)
    assert not _does_not_lose_unseen(worse, base) and _does_not_lose_unseen(same, base)


def _model_with(classifier) -> LoadedModel:
    model = _run_model(True, True)
    model.classifier = classifier
    return model


def test_submit_fuses_per_query_on_a_mixed_set_by_the_gate():
    from competition.submit.closed_set import label_fusion

    classifier = _two_landmark_classifier(weight=1.0)
    classifier.prototypes = np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32)
    vectors = [np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0]], np.float32)]  # a photo of landmark a; another
    assert label_fusion([_model_with(classifier)], [1.0], vectors, vectors, "mixed") == (None, "off")  # no gate
    classifier.gate, classifier.gated_weight = KnownGate((0.0, 10.0), -5.0, 0.9), 0.5  # P(known) from prototypes
    (rows, _), note = label_fusion([_model_with(classifier)], [1.0], vectors, vectors, "mixed")
    assert note.startswith("per query") and "weight 0.5" in note
    chance = classifier.known_probability(vectors[0])
    assert chance[0] > 0.9 and chance[1] < 0.01
    expected = (
        0.5
        * chance[:, None]
        * chance[None, :]
        * (classifier.posteriors(vectors[0]) @ classifier.posteriors(vectors[0]).T)
    )
    assert np.allclose(rows @ rows.T, expected, atol=1e-6)
    (rows, _), note = label_fusion([_model_with(classifier)], [1.0], vectors, vectors, "known")
    assert note.startswith("class posteriors") and np.allclose(
        rows @ rows.T, classifier.posteriors(vectors[0]) @ classifier.posteriors(vectors[0]).T, atol=1e-6
    )
    assert label_fusion([_model_with(classifier)], [1.0], vectors, vectors, "new") == (None, "off")


def _four_landmarks(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(["a", "b", "c", "d"], 10)
    return (centres[np.repeat(np.arange(4), 10)] + rng.normal(scale=0.6, size=(40, 16))).astype(np.float32), labels


def test_many_landmarks_get_prototype_posteriors_kept_sparse_and_fused_the_same_way(monkeypatch):
    """Above LOGISTIC_MOST_CLASSES (Google Landmarks' 81k) no n x classes matrix is made: prototypes,
    each photo's top posteriors as sparse rows, and the fusion term on candidates from them."""
    from scipy import sparse

    from competition.retrieval import posteriors as module

    vectors, labels = _four_landmarks()
    assert not fit_label_classifier(vectors, labels).sparse  # today's sizes: logistic regression
    monkeypatch.setattr(module, "LOGISTIC_MOST_CLASSES", 3)
    monkeypatch.setattr(module, "TOP_CLASSES", 2)
    monkeypatch.setattr(module, "ROWS_AT_ONCE", 7)  # blocks that do not divide the photos
    classifier = fit_label_classifier(vectors, labels, strength=10.0)
    assert classifier.sparse and "class prototypes" in classifier.kind
    rows = classifier.posteriors(vectors)
    dense = module._softmax(l2_normalize(vectors) @ classifier.coef.T)
    assert sparse.issparse(rows) and (rows.getnnz(axis=1) == 2).all()
    kept = np.sort(dense, axis=1)[:, -2:]
    assert np.allclose(np.sort(rows.toarray(), axis=1)[:, -2:], kept, atol=1e-6)
    assert (rows.toarray().argmax(axis=1) == np.searchsorted(classifier.classes, labels)).mean() > 0.9
    assert np.allclose(module.top_posterior(rows), dense.max(axis=1), atol=1e-6)
    gate = np.linspace(0, 1, len(vectors)).astype(np.float32)
    weighted = weighted_posteriors(rows, 2.0, gate)
    assert np.allclose(weighted.toarray(), weighted_posteriors(rows.toarray(), 2.0, gate), atol=1e-6)
    candidates = np.random.default_rng(1).integers(0, len(vectors), (len(vectors), 9))
    agreement = module.posterior_agreement(weighted, weighted, candidates)
    expected = module.posterior_agreement(weighted.toarray(), weighted.toarray(), candidates)
    assert np.allclose(agreement, expected, atol=1e-6) and agreement.max() > 0
    nearest = (l2_normalize(vectors) @ classifier.prototypes.T).max(axis=1)  # read off the top posterior's class
    assert np.allclose(classifier.gate_features(vectors, rows), np.stack([dense.max(axis=1), nearest], 1), atol=1e-6)


def test_a_rows_top_classes_found_by_column_groups_are_its_largest():
    from competition.retrieval.posteriors import top_columns

    rng = np.random.default_rng(4)
    scores = rng.normal(size=(300, 64 * 90)).astype(np.float32)
    scores[:5, :64] += 10  # one group holds all of a row's top columns
    scores[5:10, ::64] += 10  # each top column in its own group
    found = np.sort(top_columns(scores, 20), axis=1)
    assert np.array_equal(found, np.sort(np.argsort(-scores, axis=1)[:, :20], axis=1))
    few = scores[:, :100]  # too few columns for groups: one partition
    assert np.array_equal(np.sort(top_columns(few, 20), axis=1), np.sort(np.argsort(-few)[:, :20]))


def test_sparse_posteriors_never_hold_the_dense_rows_of_every_photo():
    """Each block of rows is cut to its top posteriors as it is made: 4,000 photos over 3,000
    landmarks would be 48 MB of dense rows (1.58M over 81k: half a terabyte)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    labels = np.arange(3000).repeat(2).astype(str)
    classifier = fit_label_classifier(rng.normal(size=(6000, 8)).astype(np.float32), labels)
    vectors = rng.normal(size=(4000, 8)).astype(np.float32)
    tracemalloc.start()
    rows = classifier.posteriors(vectors)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert classifier.sparse and rows.shape == (4000, 3000) and peak < 20e6
    assert classifier.posteriors(vectors[:0]).shape == (0, 3000)


def test_a_large_sets_posteriors_say_how_far_they_are(monkeypatch, capsys):
    """760k gallery photos over 81k landmarks take twenty minutes on 2 cores: submit shows them going."""
    from competition import progress

    monkeypatch.setattr(progress, "PIPED_EVERY", 0.0)  # piped (pytest captures stderr): a line a block
    rng = np.random.default_rng(0)
    classifier = fit_label_classifier(
        rng.normal(size=(6000, 8)).astype(np.float32), np.arange(3000).repeat(2).astype(str)
    )
    vectors = rng.normal(size=(600, 8)).astype(np.float32)
    quiet = classifier.posteriors(vectors)
    assert capsys.readouterr().err == ""
    shown = classifier.posteriors(vectors, progress=True)
    said = capsys.readouterr().err
    assert "class posteriors of 600 photos over 3,000 landmarks: 3/3 block" in said and (shown != quiet).nnz == 0


def test_a_run_over_many_landmarks_trains_and_submits_with_sparse_posteriors(tiny_competition, tmp_path, monkeypatch):
    from competition.retrieval import posteriors as module

    monkeypatch.setattr(module, "LOGISTIC_MOST_CLASSES", 2)  # the tiny set's 4 landmarks count as many
    summary = train(tiny_config(tiny_competition, tmp_path / "runs", "run", landmarks="known"), progress=False)
    assert summary["record"]["classifier"].startswith("class prototypes")
    result = submit(tiny_submit_config(tiny_competition, tmp_path, landmarks="known", name="many"), progress=False)
    assert result.fused and result.scores["top1"] > 0


def test_auto_and_the_fusion_share_the_queries_posteriors(tiny_competition, tmp_path, monkeypatch):
    """auto's estimate reads the queries' class posteriors and the fusion ranks with them: made
    once (at Google Landmarks size, 117k queries over 81k landmarks take minutes)."""
    from competition.retrieval.landmarks import KnownShare
    from competition.submit import closed_set

    train(tiny_config(tiny_competition, tmp_path / "runs", "run"), progress=False)
    # the tiny set's estimate says new landmarks, where nothing is fused: say known, as a closed set's would
    monkeypatch.setattr(closed_set, "estimate_known_share", lambda top, _: KnownShare(0.9, 0.8, 1.0, "known", len(top)))
    made, real = [], LabelClassifier.posteriors
    monkeypatch.setattr(LabelClassifier, "posteriors", lambda self, v, *more: made.append(v) or real(self, v, *more))
    result = submit(tiny_submit_config(tiny_competition, tmp_path, landmarks="auto", name="auto"), progress=False)
    assert result.fused and result.record["landmarks"].startswith("known (auto")
    assert len(made) == 2 and made[0] is not made[1]  # the queries' once, the gallery's once


def test_the_gate_reads_a_large_sets_photos_a_block_at_a_time():
    """At 760k gallery photos x 1280-d a whole unit copy and the nearest prototypes were 4 GB each:
    with the search's memory after them, submit at Google Landmarks size was killed at 23 GB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    classifier = fit_label_classifier(rng.normal(size=(6000, 64)).astype(np.float32), np.arange(3000).repeat(2))
    vectors = rng.normal(size=(20000, 64)).astype(np.float32)
    posteriors = classifier.posteriors(vectors)
    tracemalloc.start()
    features = classifier.gate_features(vectors, posteriors)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    nearest = np.einsum(
        "nd,nd->n", l2_normalize(vectors), classifier.prototypes[np.asarray(posteriors.argmax(1)).ravel()]
    )
    assert peak < vectors.nbytes / 2 and np.array_equal(features[:, 1], nearest)
