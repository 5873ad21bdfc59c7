"""Submissions Kaggle accepts, and scores that cannot lie."""

import csv
import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from competition.data.discover import discover_competition
from competition.errors import CompeteError
from competition.evaluate.formats import KAGGLE
from competition.evaluate.metrics import score_ranking
from competition.evaluate.scoring import score_submission
from competition.evaluate.validate import validate_submission
from competition.retrieval.search import search
from competition.settings.submit import SubmitConfig
from competition.submit.run import submit


def kaggle_rules(text: str, query_ids: set[str], index_ids: set[str]) -> list[str]:
    """The Google Landmark Retrieval submission rules, written from the competition page:
    header id,images; one row per test id; images are index ids, space separated, at most
    100, none twice. Independent of compete's own reader and validator."""
    text = text.removeprefix("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    errors = [] if rows and rows[0] == ["id", "images"] else ["header"]
    seen = set()
    for row in rows[1:]:
        if len(row) != 2 or row[0] not in query_ids or row[0] in seen:
            errors.append(f"row {row}")
            continue
        seen.add(row[0])
        images = row[1].split(" ") if row[1] else []
        if len(images) > 100 or len(set(images)) != len(images) or not set(images) <= index_ids:
            errors.append(f"images of {row[0]}")
    return errors + (["missing ids"] if seen != query_ids else [])


def _common(tmp_path, data, **settings):
    return dict(
        data=str(data),
        runs_dir=str(tmp_path / "runs"),
        submissions_dir=str(tmp_path / "subs"),
        leaderboard=str(tmp_path / "board.md"),
        image_size=32,
        **settings,
    )


def test_kaggle_file_follows_the_competition_rules_and_round_trips(tiny_competition, tmp_path):
    result = submit(
        SubmitConfig(model=["efficientnet_lite0"], name="k", format="kaggle", **_common(tmp_path, tiny_competition)),
        progress=False,
    )
    found = discover_competition(tiny_competition)
    query_ids = {r.path.stem for r in found.query}
    index_ids = {r.path.stem for r in found.gallery}
    text = result.path.read_text()
    assert text.splitlines()[1].split(",")[0] in query_ids and ".jpg" not in text  # ids, not file names
    assert len(text.splitlines()[1].split(",")[1].split()) == len(index_ids)  # k: 100 capped by the gallery
    assert kaggle_rules(text, query_ids, index_ids) == []
    assert (
        validate_submission(
            result.path, [r.name for r in found.query], [r.name for r in found.gallery], expected_format=KAGGLE
        )
        == []
    )
    rescored = score_submission(result.path, tiny_competition)  # read back by id, scored as submit scored it
    assert rescored["top1"] == result.scores["top1"] and rescored["map@100"] == result.scores["map@100"]
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeff" + text, encoding="utf-8")
    assert validate_submission(bom, [r.name for r in found.query], [r.name for r in found.gallery]) == []
    plain = submit(
        SubmitConfig(model=["efficientnet_lite0"], name="plain", **_common(tmp_path, tiny_competition)), progress=False
    )
    problems = validate_submission(
        plain.path, [r.name for r in found.query], [r.name for r in found.gallery], expected_format=KAGGLE
    )
    assert problems and "id,images" in problems[0]


def test_two_gallery_photos_with_one_kaggle_id_are_refused(tiny_competition, tmp_path):
    first = sorted((tiny_competition / "gallery").iterdir())[0]
    Image.open(first).save(first.with_suffix(".png"))
    with pytest.raises(CompeteError, match="share the id"):
        submit(
            SubmitConfig(model=["efficientnet_lite0"], format="kaggle", **_common(tmp_path, tiny_competition)),
            progress=False,
        )


def test_a_repeated_right_photo_counts_once(tiny_competition, tmp_path):
    found = discover_competition(tiny_competition)
    query = found.query[0]
    right = next(g for g in found.gallery if g.label == query.label)
    rows = ["query," + ",".join(f"rank_{i}" for i in range(1, 11))]
    rows += [f"{q.name}," + ",".join([right.name if q is query else found.gallery[0].name] * 10) for q in found.query]
    path = tmp_path / "repeats.csv"
    path.write_text("\n".join(rows) + "\n")
    scores = score_submission(path, tiny_competition)
    assert all(0 <= scores[k] <= 1 for k in scores)
    once = score_ranking(np.zeros((1, 10), dtype=int), ["a"], ["a", "b"])  # the one right photo, ten times
    assert once["p@10"] == pytest.approx(0.1) and once["map@10"] == 1.0 and once["top1"] == 1.0


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_with_k_as_large_as_the_gallery_gives_full_rows(kind):
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(200, 16)).astype(np.float32), rng.normal(size=(20, 16)).astype(np.float32)
    _, indices = search(queries, gallery, k=200, index=kind)
    assert (indices >= 0).all() and all(len(set(row)) == 200 for row in indices)


@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.0, 0.0], [float("nan"), 1.0], [1.0]])
def test_bad_ensemble_weights_are_refused(weights):
    with pytest.raises(CompeteError, match="weight"):
        SubmitConfig(model=["a", "b"], ensemble_weights=weights)


def _labels(root, rows):
    (root / "labels.csv").write_text("image,class\n" + "\n".join(rows) + "\n")


def test_labels_blank_padded_or_partial(tiny_competition, tmp_path, caplog):
    found = discover_competition(tiny_competition)
    photos = found.query + found.gallery
    _labels(tiny_competition, [f"{r.key},{'' if i == 0 else r.label}" for i, r in enumerate(photos)])
    with pytest.raises(CompeteError, match="blank class in 1 row"):
        discover_competition(tiny_competition)
    _labels(tiny_competition, [f"{r.key}, {r.label} " for r in photos])
    with caplog.at_level(logging.WARNING):
        padded = discover_competition(tiny_competition)
    assert "removed spaces" in caplog.text and [r.label for r in padded.query] == [r.label for r in found.query]
    assert {r.label for r in padded.query} & set(padded.train_classes)  # seen landmarks stay seen
    _labels(tiny_competition, [f"{r.key},{r.label}" for r in photos[1:]])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = submit(
            SubmitConfig(model=["efficientnet_lite0"], **_common(tmp_path, tiny_competition)), progress=False
        )
    assert (
        result.scores is None and f"{len(photos) - 1} of {len(photos)}" in caplog.text and photos[0].key in caplog.text
    )


def _jpeg(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, format="JPEG")


def test_glr_layout_is_read_from_train_csv_and_nested_folders(tmp_path):
    root = tmp_path / "glr"
    rows = []
    for landmark in range(3):
        for photo in range(3):
            photo_id = f"{landmark}{photo}a{'f' * 13}"
            _jpeg(root / "train" / photo_id[0] / photo_id[1] / photo_id[2] / f"{photo_id}.jpg", (80 * landmark, 0, 0))
            rows.append(f"{photo_id},{100 + landmark}")
    rows.append("fffmissing,101")  # listed, not on disk: named and counted
    (root / "train.csv").write_text("id,landmark_id\n" + "\n".join(rows) + "\n")
    for folder, ids in (("index", ["abc1", "abd2", "bcd3"]), ("test", ["cde4", "cdf5"])):
        for photo_id in ids:
            _jpeg(root / folder / photo_id[0] / photo_id[1] / photo_id[2] / f"{photo_id}.jpg", (0, 90, 0))
    (root / "test" / "c" / "d" / "e" / "notes.txt").write_text("not a photo")
    found = discover_competition(root)
    assert found.layout == "glr" and found.train_classes == ["100", "101", "102"] and len(found.train) == 9
    assert [r.name for r in found.query] == ["c/d/e/cde4.jpg", "c/d/f/cdf5.jpg"] and len(found.gallery) == 3
    assert any("fffmissing" in s for s in found.skipped) and any("notes.txt" in s for s in found.skipped)
    result = submit(
        SubmitConfig(model=["efficientnet_lite0"], format="kaggle", **_common(tmp_path, root)), progress=False
    )
    lines = result.path.read_text().splitlines()
    assert lines[0] == "id,images" and lines[1].startswith("cde4,") and len(lines[1].split(",")[1].split()) == 3


def test_nested_query_folders_and_other_extensions_are_found_or_named(tiny_competition):
    first = sorted((tiny_competition / "query").iterdir())[0]
    (tiny_competition / "query" / "sub").mkdir()
    first.rename(tiny_competition / "query" / "sub" / first.name)
    Image.open(tiny_competition / "query" / "sub" / first.name).save(tiny_competition / "query" / "extra.gif")
    (tiny_competition / "query" / "clip.mp4").write_bytes(b"\0")
    labels = tiny_competition / "labels.csv"
    labels.write_text(labels.read_text().replace(f"query/{first.name}", f"query/sub/{first.name}"))
    found = discover_competition(tiny_competition)
    names = [r.name for r in found.query]
    assert f"sub/{first.name}" in names and "extra.gif" in names
    assert [s for s in found.skipped if "clip.mp4" in s]


def test_submit_pooling_view_and_weights_file_reach_the_embedding(tiny_competition, tmp_path):
    import torch

    from competition.models.registry import build_classifier, get_spec

    wide = sorted((tiny_competition / "gallery").iterdir())[0]  # one landscape photo: aspect and square differ
    with Image.open(wide) as photo:
        photo.crop((0, 0, photo.width, photo.height // 2)).save(wide)
    settings = _common(tmp_path, tiny_competition, flip=False) | {"image_size": 64}  # 64 x 32 vs 64 x 64
    gem = submit(SubmitConfig(model=["efficientnet_lite0"], name="gem", **settings), progress=False)
    submit(SubmitConfig(model=["efficientnet_lite0"], name="avg", pooling="avg", **settings), progress=False)
    square = submit(
        SubmitConfig(model=["efficientnet_lite0"], name="square", resize="square", **settings), progress=False
    )
    torch.manual_seed(0)  # weights no hub has: an off-the-shelf backbone can still be submitted with them
    torch.save(build_classifier(get_spec("efficientnet_lite0")).state_dict(), tmp_path / "lite0.pth")
    own = submit(
        SubmitConfig(model=["efficientnet_lite0"], name="own", weights_file=str(tmp_path / "lite0.pth"), **settings),
        progress=False,
    )
    vectors = {
        name: np.load(tmp_path / "runs" / "submission-embeddings" / f"{name}.npz")["gallery"]
        for name in ("gem", "avg", "square", "own")
    }
    assert not np.allclose(vectors["gem"], vectors["avg"]) and not np.allclose(vectors["gem"], vectors["square"])
    assert not np.allclose(vectors["gem"], vectors["own"]) and own.path.exists()
    assert gem.record["tta"] == "aspect up to 64" and square.record["tta"] == "square 64"  # the view is on the record
    caches = sorted(p.name for p in (tmp_path / "runs" / "feature-cache").glob("*.store"))
    assert len(caches) == 4  # each setting its own cache entry, never a stale vector


def test_a_glr_solution_file_is_scored_as_kaggle_scores_it(tiny_competition, tmp_path):
    import pandas as pd

    from competition.cli import app
    from competition.evaluate.solution import read_solution, score_against_solution

    # written by hand from the rules: AP@100 = sum P(k) rel(k) / min(m, 100); Ignored rows count nowhere
    solution = tmp_path / "retrieval_solution_v2.1.csv"
    solution.write_text(
        "id,images,Usage\nq1,a b,Public\nq2,c,Private\nq3,None,Ignored\nq4,a,Public\nq5,d e f,Private\n"
    )
    submission = tmp_path / "sub.csv"
    submission.write_text("id,images\nq1,a x b\nq2,x c\nq3,a\nq4,b c\n")  # q5 left out: scores 0
    scores = score_against_solution(submission, read_solution(solution))
    assert scores["public_map@100"] == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0) / 2)
    assert scores["private_map@100"] == pytest.approx((1 / 2 + 0) / 2)
    assert (scores["public_queries"], scores["private_queries"]) == (2, 2)
    printed = CliRunner().invoke(app, ["score", str(submission), "--solution", str(solution)])
    assert printed.exit_code == 0 and "Public   mAP@100 0.4167 (2 queries)" in printed.output

    # where both apply, a solution file made from labels.csv gives the mAP@100 that labels.csv gives
    result = submit(
        SubmitConfig(model=["efficientnet_lite0"], name="k", format="kaggle", **_common(tmp_path, tiny_competition)),
        progress=False,
    )
    labels = pd.read_csv(tiny_competition / "labels.csv")
    stem = labels["image"].map(lambda p: Path(p).stem)
    gallery = labels[labels["image"].str.startswith("gallery/")]
    rows = [
        (stem[i], " ".join(stem[gallery.index[gallery["class"] == labels["class"][i]]]), "Public")
        for i in labels.index
        if labels["image"][i].startswith("query/")
    ]
    pd.DataFrame(rows, columns=["id", "images", "Usage"]).to_csv(tmp_path / "from-labels.csv", index=False)
    from_labels = score_against_solution(result.path, read_solution(tmp_path / "from-labels.csv"))
    assert from_labels["public_map@100"] == pytest.approx(result.scores["map@100"])


def test_submit_verify_reranks_through_cached_local_features_and_says_its_cost(tiny_competition, tmp_path):
    settings = _common(tmp_path, tiny_competition, flip=False)
    result = submit(SubmitConfig(model=["efficientnet_lite0"], name="v", verify=4, k=3, **settings), progress=False)
    assert (
        result.record["verification"].startswith("SIFT + MAGSAC, top 4, ")
        and "s/query" in result.record["verification"]
    )
    assert any(note.startswith("geometric verification:") for note in result.notes)
    cached = list((tmp_path / "runs" / "local-feature-cache").rglob("*.npz"))
    assert cached and len(cached) <= len(list((tiny_competition / "query").iterdir())) + len(
        list((tiny_competition / "gallery").iterdir())
    )
    assert len(result.path.read_text().splitlines()[1].split(",")) == 1 + 3  # verified top 4, cut to k=3


def test_search_knobs_reach_the_index_and_the_leaderboard_row(tiny_competition, tmp_path):
    common = _common(tmp_path, tiny_competition, flip=False)
    ivf = submit(SubmitConfig(model=["efficientnet_lite0"], name="ivf", index="ivf", nprobe=3, **common), False)
    assert re.fullmatch(r"ivf, nprobe 1 \(recall@10 vs exact 1\.000\)", ivf.record["index"])  # 1 cell: all of it
    expert = submit(SubmitConfig(model=["efficientnet_lite0"], name="flat", index_factory="Flat", **common), False)
    assert expert.record["index"] == "Flat (exact search)"  # brute force: no recall to report
    assert expert.record["settings"]["index_factory"] == "Flat" and ivf.record["settings"]["nprobe"] == 3
    plain = submit(SubmitConfig(model=["efficientnet_lite0"], name="exact", **common), False)
    assert plain.record["index"] == "exact" and (plain.path.read_text() == ivf.path.read_text())


def test_a_run_says_the_recipe_its_augmented_folder_was_made_with(tiny_competition):
    from competition.augment.generate import augment_competition
    from competition.augment.recipes import load_recipe
    from competition.train.record import augmentation_of

    augment_competition(tiny_competition, load_recipe("light", target_per_class=5), progress=False)
    folder = tiny_competition / "augmented"
    assert augmentation_of(True, "cosface", folder) == "light×5"
    assert augmentation_of(True, "whitening", folder) == "none"  # fitted on the originals only
    assert augmentation_of(True, "cosface", tiny_competition / "elsewhere") == "none"
    assert augmentation_of(False, "cosface", folder) == "none"


def test_a_submission_keeps_a_seeded_sample_of_its_vectors_for_the_report(monkeypatch, tmp_path):
    """GLDv2's 760k gallery vectors were 4.5 GB a submission, kept for a t-SNE map of a sample."""
    from types import SimpleNamespace

    from competition.submit import record

    monkeypatch.setattr(record, "KEPT_VECTORS", 5)
    photos = [SimpleNamespace(name=f"g{i}") for i in range(12)]
    competition = SimpleNamespace(query=photos[:3], gallery=photos)
    gallery, queries = np.arange(24, dtype=np.float32).reshape(12, 2), np.ones((3, 2), np.float32)
    for name in ("one", "two"):
        record.save_ranked_vectors(tmp_path / f"{name}.npz", competition, queries, gallery)
    one, two = (np.load(tmp_path / f"{name}.npz") for name in ("one", "two"))
    names = [str(n) for n in one["gallery_names"]]
    assert len(names) == 5 and names == sorted(names, key=lambda n: int(n[1:]))  # in their order
    assert np.array_equal(one["gallery"], gallery[[int(n[1:]) for n in names]])  # each name with its row
    assert np.array_equal(one["gallery_names"], two["gallery_names"])  # seeded
    assert list(one["query_names"]) == ["g0", "g1", "g2"] and one["queries"].shape == (3, 2)  # few: all kept
