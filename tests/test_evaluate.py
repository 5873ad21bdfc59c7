import json
import multiprocessing
import re

import numpy as np
import pytest

from competition.errors import CompeteError
from competition.evaluate.formats import CSV, JSON, KAGGLE
from competition.evaluate.leaderboard import add_record, read_records
from competition.evaluate.metrics import (
    mean_average_precision,
    per_class_top1,
    relevance,
    score_by_group,
    score_ranking,
)
from competition.evaluate.submission import read_submission, render_submission, write_submission
from competition.retrieval.ensemble import fuse_concat
from competition.retrieval.neighbours import leave_one_out_ranking
from competition.retrieval.search import search
from competition.retrieval.vectors import l2_normalize

GALLERY = ["a", "b", "a", "c", "b"]
QUERIES = ["a", "b", "c"]
RANKING = np.array(
    [
        [1, 0, 2],  # a: miss, hit, hit
        [0, 3, 4],  # b: miss, miss, hit
        [3, 0, 1],
    ]
)  # c: hit


def test_topk_and_map_on_a_hand_computed_example():
    scores = score_ranking(RANKING, QUERIES, GALLERY, ks=(1, 2, 3), map_k=3)
    assert scores["top1"] == pytest.approx(1 / 3)
    assert scores["top2"] == pytest.approx(2 / 3)
    assert scores["top3"] == pytest.approx(1.0)
    # AP@3: a = (1/2 + 2/3) / 2, b = (1/3) / 2, c = 1 / 1
    expected = np.mean([(0.5 + 2 / 3) / 2, (1 / 3) / 2, 1.0])
    assert scores["map@3"] == pytest.approx(expected)


def test_map_counts_relevant_items_beyond_k():
    hits = np.array([[True, False]])
    assert mean_average_precision(hits, 2, np.array([5])) == pytest.approx(0.5)


def test_scores_split_seen_and_unseen():
    groups = score_by_group(RANKING, QUERIES, GALLERY, seen_classes={"a", "b"}, ks=(1,))
    assert groups["seen"]["queries"] == 2 and groups["unseen"]["queries"] == 1
    assert groups["seen"]["top1"] == 0.0 and groups["unseen"]["top1"] == 1.0


def test_relevance_matches_labels():
    assert relevance(RANKING, QUERIES, GALLERY).tolist() == [
        [False, True, True],
        [False, False, True],
        [True, False, False],
    ]


def test_faiss_search_matches_brute_force():
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(50, 16)), rng.normal(size=(7, 16))
    scores, ranking = search(queries, gallery, k=5)
    expected = np.argsort(-(l2_normalize(queries) @ l2_normalize(gallery).T), axis=1)[:, :5]
    assert (ranking == expected).all()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_leave_one_out_never_returns_the_query_itself():
    x = np.eye(4) + 0.01
    ranking = leave_one_out_ranking(x, k=3)
    assert all(i not in row for i, row in enumerate(ranking))


def test_fused_cosine_is_the_weighted_mean_of_model_cosines():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 8)), rng.normal(size=(2, 3))
    fused = fuse_concat([a, b], [1.0, 0.5])
    cos = lambda x: float(l2_normalize(x)[0] @ l2_normalize(x)[1])  # noqa: E731
    assert float(fused[0] @ fused[1]) == pytest.approx((cos(a) + 0.5 * cos(b)) / 1.5, abs=1e-6)
    with pytest.raises(ValueError):
        fuse_concat([a, b], [1.0])
    with pytest.raises(ValueError, match="one count"):
        fuse_concat([a, b[:1]])  # one model's photos fewer: never a silent cut


def test_fusing_a_large_gallery_holds_one_copy_of_it(monkeypatch):
    """A block of rows at a time: at 760k photos x 1280-d each whole copy (float64 when weighted)
    was 4-8 GB, beside the index the search builds next."""
    import tracemalloc

    from competition.retrieval import ensemble

    monkeypatch.setattr(ensemble, "ROWS_AT_ONCE", 1000)  # 40 blocks of this gallery
    rng = np.random.default_rng(0)
    one, two = rng.normal(size=(40000, 64)).astype(np.float32), rng.normal(size=(40000, 16)).astype(np.float32)
    tracemalloc.start()
    fused = fuse_concat([one, two], [1.0, 0.3])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    whole = l2_normalize(np.concatenate([l2_normalize(one), l2_normalize(two) * np.sqrt(0.3)], axis=1))
    assert peak < 1.3 * fused.nbytes and np.array_equal(fused, whole)


def test_submission_formats_round_trip(tmp_path):
    queries, results = ["q 1.jpg", "q2.jpg"], [["g 3.jpg", "g1.jpg"], ["g1.jpg", "g2.jpg"]]
    path = write_submission(tmp_path / "s.csv", queries, results)
    assert path.read_text().splitlines()[0] == "query,rank_1,rank_2"
    assert read_submission(path) == (CSV, dict(zip(queries, results)))
    json_path = write_submission(tmp_path / "s.json", queries, results, fmt=JSON)
    assert read_submission(json_path) == (JSON, dict(zip(queries, results)))
    with pytest.raises(CompeteError, match="contain whitespace"):
        render_submission(queries, results, fmt=KAGGLE)
    kaggle = write_submission(tmp_path / "k.csv", ["q.jpg"], [["g1.jpg", "g2.png"]], fmt=KAGGLE)
    assert kaggle.read_text() == "id,images\nq,g1 g2\n"  # Kaggle ids: names without their extension
    assert read_submission(kaggle) == (KAGGLE, {"q": ["g1", "g2"]})
    with pytest.raises(CompeteError, match="at most 100"):
        render_submission(["q.jpg"], [[f"g{i}.jpg" for i in range(101)]], fmt=KAGGLE)


def _add(args):
    path, index = args
    add_record(path, {"name": f"run{index}", "top1": index / 10, "date": "2026-01-01"})


def test_leaderboard_sorted_and_concurrent_writers_all_land(tmp_path):
    path = tmp_path / "leaderboard.md"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_add, [(path, i) for i in range(8)])
    assert sorted(r["name"] for r in read_records(path)) == [f"run{i}" for i in range(8)]
    table_rows = [line for line in path.read_text().splitlines() if re.match(r"\| run\d", line)]
    assert [row.split("|")[1].strip() for row in table_rows] == [f"run{i}" for i in reversed(range(8))]
    assert all(json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines())


def test_precision_at_k_and_per_class_on_the_hand_example():
    scores = score_ranking(RANKING, QUERIES, GALLERY, ks=(1,), map_k=3)
    assert scores["p@3"] == pytest.approx(np.mean([2 / 3, 1 / 3, 1 / 3]))
    hits = relevance(RANKING, QUERIES, GALLERY)
    assert per_class_top1(hits, QUERIES) == {"a": 0.0, "b": 0.0, "c": 1.0}


def test_metrics_agree_with_scikit_learn_and_pytorch_metric_learning():
    """Where the definitions overlap, our numbers must equal the libraries' on random embeddings."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from sklearn.metrics import accuracy_score, recall_score

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    gallery_labels = np.repeat(np.arange(5), 6)
    query_labels = np.repeat(np.arange(5), 3)
    gallery = l2_normalize(centers[gallery_labels] + rng.normal(size=(30, 16)))
    queries = l2_normalize(centers[query_labels] + rng.normal(size=(15, 16)))
    _, ranking = search(queries, gallery, 30)
    ours = score_ranking(ranking, query_labels.astype(str), gallery_labels.astype(str), ks=(1,))
    predicted = gallery_labels[ranking[:, 0]]
    assert ours["top1"] == pytest.approx(accuracy_score(query_labels, predicted))
    per_class = per_class_top1(
        relevance(ranking, query_labels.astype(str), gallery_labels.astype(str)), query_labels.astype(str)
    )
    assert list(per_class.values()) == pytest.approx(recall_score(query_labels, predicted, average=None).tolist())
    library = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count"
    ).get_accuracy(queries, query_labels, gallery, gallery_labels, ref_includes_query=False)
    assert ours["top1"] == pytest.approx(library["precision_at_1"])
    # MAP@R (R = 6 photos per landmark here) is our mAP@6: AP over the first R results, divided by R.
    ours_at_r = score_ranking(ranking, query_labels.astype(str), gallery_labels.astype(str), ks=(1,), map_k=6)
    assert ours_at_r["map@6"] == pytest.approx(library["mean_average_precision_at_r"], abs=1e-6)


def test_leaderboard_diff_lists_only_what_differs(tmp_path):
    from competition.evaluate.leaderboard import describe_entry, diff_configs

    board = tmp_path / "leaderboard.md"
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"lr": 0.001, "head": "arcface", "provenance": {"seed": 0}}))
    add_record(board, {"name": "a", "models": ["r1"], "tta": "none", "top1": 0.5, "date": "2026-01-01"})
    add_record(board, {"name": "b", "models": ["efficientnet_lite0"], "tta": "flip", "top1": 0.4, "date": "2026-01-02"})
    lines = diff_configs(describe_entry("a", board, tmp_path / "runs"), describe_entry("b", board, tmp_path / "runs"))
    assert "tta: none -> flip" in lines and "model0.head: arcface -> –" in lines and "top1: 0.500 -> 0.400" in lines
    assert not any(line.startswith("date") for line in lines)
    with pytest.raises(CompeteError, match="neither a submission"):
        describe_entry("ghost", board, tmp_path / "runs")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_exact_neighbours_on_clustered_data(kind):
    from competition.retrieval.search import recall_against_exact

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 32))
    gallery = l2_normalize(centres[rng.integers(0, 100, 4000)] + 0.3 * rng.normal(size=(4000, 32)))
    queries = l2_normalize(centres[:50] + 0.3 * rng.normal(size=(50, 32)))
    _, approximate = search(queries, gallery, 5, index=kind)
    assert approximate.shape == (50, 5)
    assert recall_against_exact(queries, gallery, approximate, 5) > 0.9


def test_auto_index_is_ivf_only_for_a_large_gallery_searched_by_few_queries_and_unknown_kinds_are_refused():
    from competition.retrieval.search import APPROXIMATE_FROM, EXACT_FOR_QUERIES, resolve_index

    few, many = EXACT_FOR_QUERIES - 1, EXACT_FOR_QUERIES
    assert resolve_index("auto", APPROXIMATE_FROM - 1, few) == "exact"
    assert resolve_index("auto", APPROXIMATE_FROM, few) == "ivf"
    assert resolve_index("auto", APPROXIMATE_FROM) == "ivf"  # queries not known: an index kept for queries as they come
    assert resolve_index("auto", 10 * APPROXIMATE_FROM, many) == "exact"  # BLAS over blocks of queries is faster
    assert resolve_index("ivf", APPROXIMATE_FROM, many) == "ivf"  # what the user names is what they get
    with pytest.raises(CompeteError, match="index must be"):
        resolve_index("annoy", 10)


def test_tta_views_are_resized_from_the_photo_and_averaged_by_direction_at_their_length(tmp_path):
    import torch
    from PIL import Image

    from competition.data.dataset import ViewsDataset, resize_to_tensor
    from competition.retrieval.embed import Extraction, extract_features
    from competition.settings.model import View

    photo = np.random.default_rng(7).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "wide.png")
    views, _, _, ok = ViewsDataset([tmp_path / "wide.png"], 64, scales=[0.5, 1.0, 1.5])[0]
    assert ok and [tuple(v.shape[-2:]) for v in views] == [(32, 32), (64, 64), (96, 96)]
    assert torch.equal(views[2], resize_to_tensor(photo, 96))  # from the photo's pixels, not an upsampled view
    aspect, _, _, _ = ViewsDataset([tmp_path / "wide.png"], 128, resize="aspect")[0]
    assert tuple(aspect[0].shape[-2:]) == (64, 128)  # longer side 128, aspect kept (120:200 -> 77 -> 64, x32)
    for scales in ([50.0], [], [1.0] * 6, [0.0]):
        with pytest.raises(CompeteError, match="scale"):
            ViewsDataset([tmp_path / "wide.png"], 224, scales=scales)

    paths = []
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        paths.append(tmp_path / f"{i}.png")

    def mean_colour(batch):  # a tiny "model": not flip-invariant, so TTA must change the vectors
        return torch.cat([batch.mean(dim=(2, 3)), batch[:, :, :, : batch.shape[-1] // 2].mean(dim=(2, 3))], dim=1)

    plain, _ = extract_features(
        mean_colour, paths, View(32, "square"), torch.device("cpu"), how=Extraction(progress=False)
    )
    flipped, _ = extract_features(
        mean_colour, paths, View(32, "square", flip=True), torch.device("cpu"), how=Extraction(progress=False)
    )
    assert plain.shape == flipped.shape == (3, 6) and not np.allclose(plain, flipped)
    # the views' directions averaged (no view dominates), at their mean length (a last-layer
    # projection was trained on one view's features, lengths included)
    for path in paths:
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path.with_name(f"mirrored-{path.name}"))
    mirrored, _ = extract_features(
        mean_colour,
        [p.with_name(f"mirrored-{p.name}") for p in paths],
        View(32, "square"),
        torch.device("cpu"),
        how=Extraction(progress=False),
    )
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in (plain, mirrored)]
    length = (np.linalg.norm(plain, axis=1) + np.linalg.norm(mirrored, axis=1)) / 2
    assert np.allclose(flipped, (unit[0] + unit[1]) / 2 * length[:, None], rtol=1e-3, atol=1e-4)


def test_aspect_views_are_batched_by_shape_and_give_the_vectors_of_one_photo_per_batch(tmp_path):
    import torch
    from PIL import Image

    from competition.data.dataset import ViewsDataset
    from competition.retrieval.embed import Extraction, extract_features
    from competition.settings.model import View

    rng = np.random.default_rng(3)
    paths = []
    for i, (height, width) in enumerate([(120, 200), (200, 120), (121, 199), (90, 90), (118, 203), (200, 121)]):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    paths.append(tmp_path / "broken.jpg")
    paths[-1].write_bytes(b"not a photo")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait: planned as the portrait it is read as
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(tmp_path / "turned.jpg", exif=exif)
    paths.append(tmp_path / "turned.jpg")

    dataset = ViewsDataset(paths, 96, scales=[0.75, 1.0], resize="aspect")
    batches = dataset.batches(batch_size=8)
    assert sorted(i for batch in batches for i in batch) == list(range(len(paths)))
    assert all(len({tuple(dataset.shapes[i] or [i]) for i in batch}) == 1 for batch in batches)
    assert [sorted(b) for b in batches if 0 in b] == [[0, 2, 4]]  # the three landscapes of one shape go together
    assert [sorted(b) for b in batches if 1 in b] == [[1, 5, 7]]  # portraits, the EXIF-turned one among them
    assert len(batches) < len(paths)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1)
    ).eval()

    def pooled(batch):
        return model(batch).mean(dim=(2, 3))

    def embed(batch_size):
        return extract_features(
            pooled,
            paths,
            View(96, "aspect", flip=True, scales=(0.75, 1.0)),
            torch.device("cpu"),
            how=Extraction(batch_size=batch_size, progress=False),
        )

    (together, failed), (alone, _) = embed(8), embed(1)
    assert failed == [tmp_path / "broken.jpg"]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[0], together[2])  # different photos of one shape stay different


def test_compete_says_which_faiss_build_searches(monkeypatch):
    import faiss

    from competition.retrieval import search

    assert search.faiss_build().startswith(f"faiss {faiss.__version__} (")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    assert search.faiss_build().endswith("(GPU build, 2 GPU(s) in use)")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    assert search.faiss_build().endswith("(GPU build, no GPU visible)")


def test_landmark_ids_sort_as_numbers_and_a_big_confusion_matrix_keeps_the_most_confused(tmp_path, monkeypatch):
    from competition.data.discover import natural_key
    from competition.report import page

    assert sorted(["10", "9", "138982", "abbey", "2"], key=natural_key) == ["2", "9", "10", "138982", "abbey"]
    drawn = {}
    monkeypatch.setattr(page, "save_figure", lambda figure, out: drawn.update(figure=figure) or out)
    truth = [str(i) for i in range(100)]
    answers = truth[:]
    answers[5], answers[77] = "6", "3"  # two mistakes among 100 landmarks
    page.confusion_figure(truth, answers, tmp_path / "confusion.png")
    axis = drawn["figure"].axes[0]
    labels = [t.get_text() for t in axis.get_xticklabels()]
    assert len(labels) == page.CONFUSION_CLASSES and {"3", "5", "6", "77"} <= set(labels)
    assert labels == sorted(labels, key=natural_key) and "30 most confused of 100" in axis.get_title()
