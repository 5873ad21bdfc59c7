"""Unseen landmarks: folds over landmarks, validation verdicts, selection, and each safety option."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import state_of, tiny_config

from competition.errors import CompeteError
from competition.models.checkpoint import load_checkpoint
from competition.models.embedder import build_embedder
from competition.models.view import model_view
from competition.runs import BEST, Judgement, RunRecord, Verdict
from competition.settings.model import ModelSettings
from competition.submit.models import FellBack, LoadedModel, guard_unseen
from competition.train import full_layer, loop
from competition.train.describe import describe
from competition.train.folds import class_folds
from competition.train.loop import train
from competition.train.safety import interpolate_weights, layer_decay_groups, resolve_freeze_bn
from competition.train.validation import PoolScores, compare, objective, score_pool


def test_folds_hold_every_landmark_out_once_and_never_train_on_held_out_photos():
    labels = np.repeat([f"c{i}" for i in range(9)], [3, 4, 5, 6, 8, 10, 12, 2, 9])
    folds = class_folds(labels, folds=3, seed=0)
    unseen = [set(labels[f.pool][f.unseen]) for f in folds]
    assert sorted(c for group in unseen for c in group) == sorted(set(labels))  # each landmark unseen exactly once
    for fold, held_out in zip(folds, unseen):
        assert held_out.isdisjoint(labels[fold.train])  # no photo of a held-out landmark trains
        assert set(fold.train.tolist()).isdisjoint(fold.pool.tolist())
        lent = labels[fold.pool][~fold.unseen]
        for label in set(lent):  # a seen landmark lends >= 2 photos (a match in the pool) and keeps >= 2
            assert (lent == label).sum() >= 2 and (labels[fold.train] == label).sum() >= 2
        assert "c0" in held_out or "c0" not in lent  # 3 photos: too few to lend and keep two


@pytest.mark.parametrize("hold_out_landmarks", [True, False])
def test_a_pool_past_its_most_photos_draws_whole_landmarks_and_their_photos_train(hold_out_landmarks):
    labels = np.repeat([f"c{i:02d}" for i in range(40)], np.arange(40) % 7 + 4)
    whole = class_folds(labels, folds=4, seed=3, hold_out_landmarks=hold_out_landmarks)
    capped = class_folds(labels, folds=4, seed=3, hold_out_landmarks=hold_out_landmarks, most_pool=20)
    assert all(len(f.pool) > 20 for f in whole)  # so every fold is capped
    for small, full in zip(capped, whole, strict=True):
        assert 10 <= len(small.pool) <= 20
        assert sorted([*small.train, *small.pool]) == list(range(len(labels)))  # each photo trains or queries
        for label in set(labels[small.pool]):  # a drawn landmark lends what it lends uncapped
            lent = small.unseen[labels[small.pool] == label]
            assert len(lent) == (labels[full.pool] == label).sum() and len(set(lent)) == 1
        drawn = set(labels[small.pool])
        assert (labels[small.train][~np.isin(labels[small.train], list(drawn))].size  # the others train whole
                == (~np.isin(labels, list(drawn))).sum())  # fmt: skip
    again = class_folds(labels, folds=4, seed=3, hold_out_landmarks=hold_out_landmarks, most_pool=20)
    assert all(np.array_equal(a.pool, b.pool) for a, b in zip(again, capped))  # seeded


def test_a_fold_that_holds_nothing_out_is_left_out_and_a_run_on_three_photos_a_landmark_says_too_few(tmp_path):
    labels = np.repeat(["a", "b", "c"], 3)  # two of three held out leave one to train: that fold holds out none
    assert [len(f.pool) for f in class_folds(labels, folds=2, seed=0)] == [3]
    assert class_folds(labels, folds=4, seed=0, hold_out_landmarks=False) == []  # none can lend 2 and keep 2
    assert PoolScores.concat([]).means() == {}

    from competition.data.sample import SampleConfig, make_sample_competition

    small = SampleConfig(
        seen_classes=3, unseen_classes=1, train_per_class=3, query_per_class=1, gallery_per_class=2, size=64
    )
    data = make_sample_competition(tmp_path / "small", small, progress=False)
    for head in ("whitening", "cosface"):
        summary = train(tiny_config(data, tmp_path / "runs", head, head=head, folds=2), False)
        assert (
            summary["validation"]["seen"]["verdict"] == Verdict.TOO_FEW and summary["record"]["unseen"]["beats"] is None
        )
        json.loads((tmp_path / "runs" / head / "summary.json").read_text())  # strict JSON: no -inf


def test_pool_scores_and_verdicts():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=np.float32)
    scores = score_pool(vectors, ["a", "a", "b", "b", "lonely"], np.array([False, False, True, True, True]))
    assert scores.top1.tolist() == [True, True, True, True] and len(scores.ap) == 4  # "lonely" has no match
    assert scores.means() == {"seen_top1": 1.0, "seen_map@10": 1.0, "unseen_top1": 1.0, "unseen_map@10": 1.0}
    assert objective({"seen_map@10": 0.2, "unseen_map@10": 0.6, "seen_top1": 1.0}) == pytest.approx(0.4)

    def group(values, unseen):
        values = np.asarray(values, dtype=float)
        return PoolScores(values > 0.5, values, np.full(len(values), unseen))

    better, base = (
        PoolScores.concat([group([1.0] * 30, False), group([0.5] * 10, True)]),
        PoolScores.concat([group([0.5] * 30, False), group([1.0] * 10, True)]),
    )
    verdict = compare(better, base)
    assert verdict["seen"]["verdict"] == "better" and verdict["seen"]["beats"] is True
    assert verdict["unseen"]["verdict"] == Verdict.TOO_FEW and verdict["unseen"]["beats"] is None  # 10 queries
    worse = compare(base, better)
    assert worse["seen"]["verdict"] == "worse" and worse["seen"]["beats"] is False
    assert worse["seen"]["difference"]["map@10"][0] == pytest.approx(-0.5)
    # the terminal shows a verdict as its words, as summary.json keeps them
    lines = describe(verdict)
    assert lines[0].endswith(": better") and lines[1].endswith(": too few photos to tell")


def test_loss_head_keeps_the_epoch_count_the_folds_score_best(tiny_competition, tmp_path):
    summary = train(tiny_config(tiny_competition, tmp_path, "run", head="softmax", epochs=4), progress=False)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    values = [objective(row) for row in metrics.to_dict("records")]
    assert len(values) == 4 and summary["best_epoch"] == values.index(max(values)) + 1
    assert load_checkpoint(tmp_path / "run" / BEST)["epoch"] == summary["best_epoch"]
    assert set(summary["validation"]) == {"seen", "unseen"} and summary["record"]["unseen"]["verdict"]


def test_batchnorm_frozen_automatically_when_classes_are_small(tiny_competition, tmp_path):
    assert resolve_freeze_bn("auto", {"a": 12, "b": 400}) and not resolve_freeze_bn("auto", {"a": 30, "b": 31})
    initial = build_embedder(ModelSettings(backbone="resnet18", pretrained=False))[0]

    def running_mean_changed(name, **overrides):
        loop.seed_everything(0)
        train(
            tiny_config(tiny_competition, tmp_path, name, regime="full", backbone="resnet18", epochs=1, **overrides),
            progress=False,
        )
        return not torch.equal(
            state_of(tmp_path / name)["backbone.body.bn1.running_mean"],
            initial.state_dict()["backbone.body.bn1.running_mean"],
        )

    assert not running_mean_changed("auto")  # 4 photos per class: frozen by default
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["freeze_bn_resolved"] is True
    assert running_mean_changed("train-bn", freeze_bn=False)


def test_layer_decay_slows_early_blocks(tiny_competition, tmp_path):
    backbone = build_embedder(ModelSettings(backbone="resnet18", pretrained=False))[0].backbone
    groups = layer_decay_groups(backbone, 1e-3, 0.5)
    assert [g["block"] for g in groups][:3] == ["conv1", "bn1", "layer1.0"] and groups[-1]["block"] == "layer4.1"
    assert groups[-1]["lr"] == 1e-3 and groups[-2]["lr"] == 5e-4 and groups[0]["lr"] == pytest.approx(1e-3 * 0.5**9)

    train(
        tiny_config(tiny_competition, tmp_path, "decay", regime="full", backbone="resnet18", epochs=1, layer_decay=0.5),
        progress=False,
    )
    lrs = [g["initial_lr"] for g in state_of(tmp_path / "decay", "optimizer")["param_groups"]]
    assert len(lrs) == 11 and all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # 10 blocks, then the head


def _distance_from_start(run_dir, initial: dict) -> float:
    trained = state_of(run_dir)
    return sum(
        float((trained[k] - initial[k]).pow(2).sum())
        for k in trained
        if k.startswith("backbone.") and trained[k].is_floating_point()
    )


def test_l2_sp_keeps_weights_near_the_pretrained_ones(tiny_competition, tmp_path):
    loop.seed_everything(0)
    start = tiny_config(tiny_competition, tmp_path, "x")
    initial = build_embedder(start.model, start.projection)[0].state_dict()
    common = dict(regime="full", epochs=3, lr=0.05)
    train(tiny_config(tiny_competition, tmp_path, "plain", **common), progress=False)
    train(tiny_config(tiny_competition, tmp_path, "l2sp", l2_sp=100.0, **common), progress=False)
    plain, anchored = (
        _distance_from_start(tmp_path / "plain", initial),
        _distance_from_start(tmp_path / "l2sp", initial),
    )
    assert anchored < 0.5 * plain


def test_wise_ft_picks_alpha_on_held_out_classes_and_saves_those_weights(tiny_competition, tmp_path):
    loop.seed_everything(0)
    config = tiny_config(tiny_competition, tmp_path, "wise", regime="full", epochs=1, wise_ft=True)
    initial = build_embedder(config.model, config.projection)[0].state_dict()
    summary = train(config, progress=False)
    table = pd.read_csv(tmp_path / "wise" / "wise_ft.csv")
    assert table["alpha"].tolist() == list(full_layer.WISE_FT_ALPHAS)
    chosen = max(table.to_dict("records"), key=lambda row: (objective(row), -row["alpha"]))
    best = load_checkpoint(tmp_path / "wise" / BEST)
    assert best["wise_ft_alpha"] == chosen["alpha"] and summary["wise_ft_alpha"] == chosen["alpha"]
    finetuned = state_of(tmp_path / "wise")  # one epoch: last.pt holds the plain fine-tuned best
    expected = interpolate_weights(initial, finetuned, chosen["alpha"])
    assert all(torch.allclose(best["embedder"][k].float(), expected[k].float()) for k in expected)


def test_interpolation_endpoints():
    start, end = {"w": torch.zeros(3), "n": torch.tensor(1)}, {"w": torch.ones(3), "n": torch.tensor(5)}
    assert torch.equal(interpolate_weights(start, end, 0.0)["w"], torch.zeros(3))
    assert torch.equal(interpolate_weights(start, end, 0.25)["w"], torch.full((3,), 0.25))
    assert interpolate_weights(start, end, 0.25)["n"].item() == 5  # counters are not interpolated


def _run_model(beats: bool | None, verdict: str = "") -> LoadedModel:
    return LoadedModel(
        label="run", embedder=None, settings=ModelSettings(image_size=32),
        record=RunRecord(regime="full", augmentation="none", unseen=Judgement(beats, Verdict.of(verdict))),
    )  # fmt: skip


@pytest.mark.parametrize(
    "policy, beats, verdict, expected",
    [
        ("ensemble", False, "worse", ["run", "efficientnet_lite0"]),
        ("fallback", False, "no clear difference", ["efficientnet_lite0"]),
        ("keep", False, "worse", ["run"]),
        ("fallback", True, "better", ["run"]),
        ("fallback", None, Verdict.TOO_FEW, ["efficientnet_lite0"]),  # validation could not tell: keep off-the-shelf
        ("ensemble", None, "", ["run"]),  # a run without a recorded verdict
    ],
)
def test_submit_guards_runs_that_lost_to_the_pretrained_backbone(policy, beats, verdict, expected):
    models, weights, notes = guard_unseen([_run_model(beats, verdict)], [2.0], policy, with_pretrained=0.0)
    assert [m.label for m in models] == expected
    assert all(m.record.regime == "off-the-shelf" for m in models[len(expected) - (expected[-1] != "run") :])
    assert weights == [2.0] * len(expected) and bool(notes) == (expected != ["run"])
    fell_back = {m.replaces: m.fell_back for m in models if m.replaces}
    reason = FellBack.LOST.value if beats is False else FellBack.UNTOLD.value
    assert fell_back == ({} if "run" in expected else {"run": reason})


def test_with_pretrained_concatenates_the_backbone_at_a_weight():
    models, weights, notes = guard_unseen([_run_model(True)], [1.0], "keep", with_pretrained=0.5)
    assert [m.record.regime for m in models] == ["full", "off-the-shelf"] and weights == [1.0, 0.5]
    assert model_view(models[1].settings).size == 32 and notes == ["run + pretrained×0.5"]


def test_pseudo_labels_calibrate_on_held_out_classes_and_join_mutual_neighbours():
    from competition.data.discover import ImageRecord
    from competition.train.pseudo import calibrate_threshold, mutual_nearest_pairs, pseudo_classes

    vectors = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.1, 0.99, 0.05], [0, 0, 1], [0.8, 0.0, 0.6]])
    pairs, similarity = mutual_nearest_pairs(vectors)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (2, 3)]  # 4 and 5 are not each other's nearest
    # held-out classes: the close pair is right, the far one wrong -> threshold between them
    labelled = np.array([[1, 0], [0.995, 0.1], [0, 1], [0.5, 0.866]])
    threshold = calibrate_threshold(labelled, ["a", "a", "b", "c"], precision=0.9)
    assert threshold == pytest.approx(float(labelled[0] @ labelled[1] / np.linalg.norm(labelled[1])), abs=1e-6)
    records = [ImageRecord(Path(f"/q/{i}.jpg"), f"{i}.jpg", "query") for i in range(6)]
    added = pseudo_classes(records, vectors, threshold=0.992)  # pair (2, 3): 0.994; pair (0, 1): 0.990
    assert [r.name for r in added] == ["query/2.jpg", "query/3.jpg"]  # only the confident pair
    assert len({r.label for r in added}) == 1 and added[0].label.startswith("pseudo-")


def test_training_with_pseudo_labels_adds_classes(tiny_competition, tmp_path):
    config = tiny_config(tiny_competition, tmp_path, "pseudo", pseudo_labels=True, pseudo_precision=0.0, epochs=1)
    train(config, progress=False)
    saved = json.loads((tmp_path / "pseudo" / "config.json").read_text())
    assert saved["pseudo_labels_added"]["images"] >= 2
    assert any(c.startswith("pseudo-") for c in saved["classes"])


def test_a_cap_on_photos_per_landmark_is_a_seeded_sample_taken_before_any_photo_is_opened(tiny_competition, tmp_path):
    from collections import Counter

    from competition.data.discover import training_photos
    from competition.train.data import at_most_per_landmark

    records = training_photos(tiny_competition)
    capped = at_most_per_landmark(records, 2, seed=0)
    counts = Counter(r.label for r in capped)
    assert set(counts.values()) == {2} and len(counts) == len({r.label for r in records})
    assert capped == at_most_per_landmark(records, 2, seed=0) and capped != at_most_per_landmark(records, 2, seed=1)
    assert at_most_per_landmark(records, 0, seed=0) == records
    left_out = next(r for r in records if r not in capped)
    left_out.path.write_bytes(b"broken")  # a photo the cap leaves out is never read (strict would stop at it)
    train(tiny_config(tiny_competition, tmp_path, "capped", photos_per_landmark=2, strict=True), progress=False)
    config = json.loads((tmp_path / "capped" / "config.json").read_text())
    assert config["photos_per_landmark"] == 2 and config["provenance"]["photos"] == len(capped)


@pytest.mark.parametrize(
    "summary, unseen, known, steps",
    [
        # 669888f (v0.1): the sign of the top-1 difference per group, nothing else
        ({"run": "r", "beats_pretrained": {"seen": True, "unseen": False}}, (False, ""), (True, ""), None),
        # v0.2: verdicts from the paired interval beside the signs
        (
            {
                "beats_pretrained": {"seen": None, "unseen": True},
                "validation": {"seen": {"verdict": "too few photos to tell"}, "unseen": {"verdict": "better"}},
            },
            (True, "better"),
            (None, "too few photos to tell"),
            None,
        ),
        # v0.3: the label fusion's own verdict on seen landmarks is what --landmarks known trusts
        (
            {
                "beats_pretrained": {"seen": False, "unseen": None},
                "validation": {
                    "seen": {"beats": False, "verdict": "worse"},
                    "unseen": {"verdict": "no clear difference"},
                },
                "label_fusion": {"validation": {"seen": {"beats": True, "verdict": "better"}}},
            },
            (None, "no clear difference"),
            (True, "better"),
            None,
        ),
        # v0.4: the post-processing validation chose, spelled with v0.4's two re-ranking switches
        (
            {
                "beats_pretrained": {"unseen": True},
                "postprocess": {"chosen": "diffusion", "steps": {"diffusion": True}},
            },
            (True, ""),
            (None, ""),
            {"diffusion": True},
        ),
        # v0.5: the record training built, whatever older keys beside it say
        (
            {
                "record": {
                    "regime": "last",
                    "unseen": {"beats": True, "verdict": "better"},
                    "known": {"beats": None, "verdict": "too few photos to tell"},
                    "postprocess": {"qe": 2},
                },
                "beats_pretrained": {"unseen": False},
            },
            (True, "better"),
            (None, "too few photos to tell"),
            {"qe": 2},
        ),
        ({}, (None, ""), (None, ""), None),  # an unfinished run kept as it is (--if-worse keep)
    ],
)
def test_the_run_record_reads_the_summary_of_every_version(tmp_path, summary, unseen, known, steps):
    record = RunRecord.from_summary(summary, tmp_path / "summary.json")
    assert (record.unseen.beats, record.unseen.verdict.value) == unseen
    assert (record.known.beats, record.known.verdict.value) == known and record.postprocess == steps
    assert record.unseen.untold == (unseen[1] == Verdict.TOO_FEW.value)


def test_a_damaged_summary_is_one_line_naming_its_file(tmp_path):
    with pytest.raises(CompeteError, match=r"summary.json: 'validation' must be an object"):
        RunRecord.from_summary({"validation": ["better"]}, tmp_path / "summary.json")
    assert RunRecord.from_summary({"validation": {"unseen": {"verdict": "splendid"}}}, tmp_path).unseen.verdict is (
        Verdict.UNJUDGED
    )  # a verdict this version does not know counts as none
