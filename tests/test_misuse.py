"""Reliability, second round: nothing a user does deletes their photos, every bad value is one line."""

import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from typer.testing import CliRunner

from competition.cli import app
from competition.io import exclusive_use

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("out", ["{root}", "{root}/train", "{root}/train/x", "."])
@pytest.mark.parametrize("overwrite", [False, True])
def test_augment_never_writes_over_or_among_the_sources(tiny_competition, monkeypatch, out, overwrite):
    before = files_under(tiny_competition)
    monkeypatch.chdir(tiny_competition)
    result = invoke(
        "augment",
        "--data",
        tiny_competition,
        "--out",
        out.format(root=tiny_competition),
        "--target",
        6,
        "--workers",
        1,
        *(["--overwrite"] if overwrite else []),
    )
    one_line_error(result, "--out")
    assert files_under(tiny_competition) == before


def test_overwrite_only_deletes_a_folder_compete_made(tiny_competition, tmp_path):
    precious = tmp_path / "photos"
    (precious / "keep").mkdir(parents=True)
    (precious / "keep" / "holiday.jpg").write_bytes(b"x")
    result = invoke(
        "augment", "--data", tiny_competition, "--out", precious, "--overwrite", "--target", 6, "--workers", 1
    )
    one_line_error(result, "not made by compete")
    assert (precious / "keep" / "holiday.jpg").exists()


def test_two_sources_with_one_stem_keep_their_variants_apart(tiny_competition):
    from competition.train.data import augmented_variants

    folder = next(p for p in sorted((tiny_competition / "train").iterdir()))
    first = sorted(folder.iterdir())[0]
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first.with_suffix(".png"))
    assert invoke("augment", "--data", tiny_competition, "--target", 10, "--workers", 1).exit_code == 0
    variants = augmented_variants(tiny_competition / "augmented")
    jpg, png = (variants[f"train/{folder.name}/{first.stem}{suffix}"] for suffix in (".jpg", ".png"))
    assert jpg and png and set(jpg).isdisjoint(png)
    assert len(list((tiny_competition / "augmented" / folder.name).iterdir())) == 10 - 5  # none written twice


def test_a_class_name_with_quotes_and_commas_keeps_its_variants(tiny_competition):
    from competition.train.data import augmented_variants

    old = next(p for p in sorted((tiny_competition / "train").iterdir()))
    odd = old.with_name('Sacré "Cœur", Paris')
    old.rename(odd)
    assert invoke("augment", "--data", tiny_competition, "--target", 6, "--workers", 1).exit_code == 0
    variants = augmented_variants(tiny_competition / "augmented")
    assert sum(len(v) for k, v in variants.items() if k.startswith(f"train/{odd.name}/")) == 2


def test_an_augmented_folder_without_its_manifest_is_not_used_silently(tiny_competition, tmp_path):
    assert invoke("augment", "--data", tiny_competition, "--target", 6, "--workers", 1).exit_code == 0
    (tiny_competition / "augmented" / "manifest.csv").unlink()  # as after kill -9
    result = invoke(
        "train",
        "--data",
        tiny_competition,
        "--runs-dir",
        tmp_path,
        "--name",
        "r",
        "--no-pretrained",
        "--image-size",
        32,
    )
    one_line_error(result, "manifest.csv", "augment")


def _full_run(tiny_competition, runs, name, epochs=1):
    from competition.train.loop import train

    train(tiny_config(tiny_competition, runs, name, regime="full", epochs=epochs), progress=False)
    return runs / name


def test_resume_continues_a_copied_or_moved_run_in_its_new_place(tiny_competition, tmp_path):
    original = _full_run(tiny_competition, tmp_path / "runs", "first")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    before = (original / "metrics.csv").read_text()
    result = invoke("--quiet", "train", "--resume", copy, "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert (original / "metrics.csv").read_text() == before  # the original is untouched
    assert len((copy / "metrics.csv").read_text().splitlines()) == 3  # epoch 2 added to epoch 1, not restarted
    conflicting = invoke("train", "--resume", copy, "--epochs", 3, "--lr", 0.5, "--head", "arcface")
    one_line_error(conflicting, "head", "lr")
    nothing = invoke("train", "--resume", tmp_path / "nowhere")
    one_line_error(nothing, "nothing to resume")


def test_a_run_folder_or_augmented_folder_in_use_is_refused_naming_the_holder(tiny_competition, tmp_path):
    with exclusive_use(tmp_path / "runs" / "busy", "run"):
        result = invoke(
            "train",
            "--data",
            tiny_competition,
            "--runs-dir",
            tmp_path / "runs",
            "--name",
            "busy",
            "--no-pretrained",
            "--image-size",
            32,
            "--no-augmented",
        )
        one_line_error(result, "in use by compete (pid")
    with exclusive_use(tiny_competition / "augmented", "augmented folder"):
        result = invoke("augment", "--data", tiny_competition, "--overwrite", "--target", 6, "--workers", 1)
        one_line_error(result, "in use by")
    assert not (tiny_competition / "augmented").exists()
    assert not list((tmp_path / "runs").glob(".*.lock")) and not list(tiny_competition.glob(".*"))  # none left


def test_the_leaderboard_lock_serialises_writers_and_leaves_no_file(tmp_path):
    import threading

    from competition.io import file_lock

    counter, lock = tmp_path / "count.txt", tmp_path / "board.lock"
    counter.write_text("0")

    def add(times: int) -> None:
        for _ in range(times):
            with file_lock(lock):  # read, pause, write: without the lock, increments would be lost
                value = int(counter.read_text())
                time.sleep(0.0005)
                counter.write_text(str(value + 1))

    workers = [threading.Thread(target=add, args=(25,)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert counter.read_text() == "150" and not lock.exists()


def _submit(data, tmp_path, *extra):
    return invoke(
        "submit",
        "--data",
        data,
        "-m",
        "efficientnet_lite0",
        "--runs-dir",
        tmp_path / "runs",
        "--submissions-dir",
        tmp_path / "subs",
        "--leaderboard",
        tmp_path / "board.md",
        "--image-size",
        32,
        "--no-flip",
        *extra,
    )


def test_a_damaged_leaderboard_line_is_skipped_and_named(tiny_competition, tmp_path, caplog):
    assert _submit(tiny_competition, tmp_path, "--name", "a").exit_code == 0
    with open(tmp_path / "board.jsonl", "a") as handle:
        handle.write('{"name": "half-writ')  # a disk that filled mid-append
    result = _submit(tiny_competition, tmp_path, "--name", "b", "--image-size", 64, "--flip")
    assert result.exit_code == 0 and "skipped 1 damaged line(s): 2" in caplog.text, result.output
    lines = (tmp_path / "board.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b"]
    diff = invoke("leaderboard", tmp_path / "board.md", "--diff", "a", "--diff", "b")
    assert diff.exit_code == 0  # every setting that made the difference, from the rows alone
    assert "settings.image_size: 32 -> 64" in diff.output and "settings.flip: False -> True" in diff.output, diff.output
    empty = invoke("leaderboard", tmp_path / "none.md", "--json")
    assert empty.exit_code == 0 and json.loads(empty.output)["rows"] == []


def test_a_read_only_leaderboard_is_not_replaced(tiny_competition, tmp_path):
    assert _submit(tiny_competition, tmp_path, "--name", "a").exit_code == 0
    board = tmp_path / "board.md"
    board.chmod(stat.S_IRUSR | stat.S_IRGRP)
    before = board.read_text()
    one_line_error(_submit(tiny_competition, tmp_path, "--name", "b"), "read-only")
    assert board.read_text() == before and "| b |" not in (tmp_path / "board.jsonl").read_text()


def test_huge_photos_that_cannot_be_decoded_reduced_are_refused(tmp_path, monkeypatch):
    from competition.data import images

    Image.new("I;16", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_FULL_DECODE_PIXELS", 50_000)
    with pytest.raises(images.UnreadableImage, match="too large"):
        images.read_image(tmp_path / "big.png")
    Image.new("RGB", (300, 300)).save(tmp_path / "big.jpg")
    assert images.read_image(tmp_path / "big.jpg", max_side=64).shape[0] <= 300  # JPEG decodes reduced: fine


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--lr", -1], "lr"),
        (["--batch-size", 0], "--batch-size must be >= 1"),
        (["--image-size", 10], "--image-size must be 0"),
        (["--epochs", 0], "epochs"),
        (["--folds", 0], "folds"),
        (["--whiten-power", 0], "--whiten-power must be > 0"),
    ],
)
def test_bad_training_numbers_are_one_line_before_any_work(tiny_competition, tmp_path, flags, fragment):
    result = invoke("train", "--data", tiny_competition, "--runs-dir", tmp_path, "--name", "x", *flags)
    one_line_error(result, fragment)
    assert not (tmp_path / "x").exists()


def test_bad_config_files_are_one_line(tiny_competition, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [3\nlr: 0.1\n")
    one_line_error(invoke("train", "--data", tiny_competition, "--config", broken), "cannot parse")
    typed = tmp_path / "typed.yaml"
    typed.write_text("epochs: three\n")
    one_line_error(
        invoke("train", "--data", tiny_competition, "--config", typed), "--epochs must be a whole number, not 'three'"
    )


def test_a_runs_own_config_feeds_back_with_flags_over_it(tiny_competition, tmp_path):
    from competition.train.config import training_settings

    run = _full_run(tiny_competition, tmp_path / "runs", "source")
    settings = training_settings({"epochs": 5, "run_name": "again"}, run / "config.json")
    assert settings.regime == "full" and settings.epochs == 5 and settings.model.image_size == 32


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--dba", -3], "--dba"),
        (["--qe", -3], "--qe"),
        (["--scales", "0"], "scales"),
        (["--scales", "50"], "scale"),
        (["--alpha", -1], "--alpha"),
        (["--whiten-power", -1], "--whiten-power"),
        (["--rerank-k1", 0], "--rerank-k1"),
        (["--name", "../outside"], "must be a plain name"),
        (["--weights", "-1"], "weights"),
        (["--scales", "x"], "--scales must be numbers"),
        (["--ensemble-weights", "1,a"], "--ensemble-weights must be numbers"),
    ],
)
def test_bad_submit_values_are_one_line_before_any_work(tiny_competition, tmp_path, flags, fragment):
    one_line_error(_submit(tiny_competition, tmp_path, *flags), fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outside.csv").exists()


def test_augment_workers_must_not_be_negative(tiny_competition):
    one_line_error(invoke("augment", "--data", tiny_competition, "--workers=-3"), "--workers")


def test_a_best_pt_without_settings_and_a_pickled_one_are_one_line(tiny_competition, tmp_path):
    import pickle

    from competition.models.checkpoint import save_checkpoint

    run = tmp_path / "runs" / "hollow"
    save_checkpoint(run / "best.pt", {"epoch": 1})
    one_line_error(_submit(tiny_competition, tmp_path, "-m", run), "no model settings")
    (run / "best.pt").write_bytes(pickle.dumps({"format_version": 1, "x": object()}))
    result = _submit(tiny_competition, tmp_path, "-m", run)
    one_line_error(result, "unreadable checkpoint")
    assert "weights_only=False" not in result.output


def test_a_kaggle_row_too_long_for_csv_is_one_line(tiny_competition, tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("id,images\nq_0001," + " ".join(f"g{i:07d}" for i in range(20_000)) + "\n")
    one_line_error(invoke("validate", path, "--data", tiny_competition), "not a readable CSV")


def test_a_replaced_photo_of_the_same_size_and_time_is_embedded_again(tmp_path):
    import torch

    from competition.retrieval.embed import Extraction, extract_features
    from competition.settings.model import View

    first, second = tmp_path / "a.bmp", tmp_path / "b.bmp"  # uncompressed: one size for both
    Image.new("RGB", (32, 32), (255, 0, 0)).save(first)
    Image.new("RGB", (32, 32), (0, 0, 255)).save(second)
    assert first.stat().st_size == second.stat().st_size

    def colour(batch):
        return batch.mean(dim=(2, 3))

    cache = tmp_path / "cache.store"
    red, _ = extract_features(
        colour, [first], View(32, "square"), torch.device("cpu"), cache_dir=cache, how=Extraction(progress=False)
    )
    times = first.stat()
    os.replace(second, first)  # the same name, size and modification time, another photo
    os.utime(first, ns=(times.st_atime_ns, times.st_mtime_ns))
    blue, _ = extract_features(
        colour, [first], View(32, "square"), torch.device("cpu"), cache_dir=cache, how=Extraction(progress=False)
    )
    assert not np.allclose(red, blue) and blue[0, 2] > blue[0, 0]


def test_an_unfinished_run_is_refused_by_submit_unless_kept_as_it_is(tiny_competition, tmp_path, caplog):
    from competition.train.loop import train

    train(tiny_config(tiny_competition, tmp_path / "runs", "busy"), progress=False)
    (tmp_path / "runs" / "busy" / "summary.json").unlink()  # as while it trains, or after a SIGTERM
    common = ["--data", tiny_competition, "--runs-dir", tmp_path / "runs", "--leaderboard", tmp_path / "b.md"]
    common += ["--submissions-dir", tmp_path / "subs", "-m", "busy", "--no-flip"]
    one_line_error(invoke("submit", *common), "unfinished", "train it again", "--if-worse keep")
    assert not (tmp_path / "subs").exists()
    kept = invoke("submit", *common, "--if-worse", "keep")
    assert kept.exit_code == 0 and "unfinished run" in caplog.text, kept.output


def _quick_submit(data, tmp_path, *extra):
    return invoke(
        "submit", "--data", data, "--runs-dir", tmp_path / "runs", "--submissions-dir", tmp_path / "subs",
        "--leaderboard", tmp_path / "board.md", "--no-flip", *extra,
    )  # fmt: skip


def test_names_with_control_characters_are_refused_and_cells_stay_one_row(tiny_competition, tmp_path):
    from competition.evaluate.leaderboard import render

    one_line_error(_quick_submit(tiny_competition, tmp_path, "--name", "x\n## injected"), "control character")
    one_line_error(invoke("train", "--data", tiny_competition, "--name", "x\n## injected"), "control character")
    assert not (tmp_path / "subs").exists() and not (tmp_path / "board.md").exists()
    table = render([{"name": "a\n## b|c<script>", "top1": 0.5}])
    rows = [line for line in table.splitlines() if line.startswith("| a")]
    assert rows == [rows[0]] and "a ## b\\|c&lt;script>" in rows[0]  # one row; nothing breaks out of it


def test_kaggle_format_refuses_a_line_break_in_a_name_before_writing(tiny_competition, tmp_path):
    gallery = sorted((tiny_competition / "gallery").iterdir())
    shutil.copy(gallery[0], gallery[0].with_name("line\nnew.jpg"))
    result = _quick_submit(tiny_competition, tmp_path, "--format", "kaggle", "--name", "k")
    one_line_error(result, "whitespace", "'line\\nnew.jpg'")
    assert not (tmp_path / "subs").exists()


def test_huge_ensemble_weights_rank_like_equal_ones(tiny_competition, tmp_path):
    models = ["-m", "efficientnet_lite0", "-m", "efficientnet_lite0"]
    huge = _quick_submit(tiny_competition, tmp_path, *models, "--ensemble-weights", "1e308,1e308", "--name", "huge")
    assert huge.exit_code == 0, huge.output
    equal = _quick_submit(tiny_competition, tmp_path, *models, "--ensemble-weights", "1,1", "--name", "equal")
    assert equal.exit_code == 0, equal.output
    assert (tmp_path / "subs" / "huge.csv").read_text() == (tmp_path / "subs" / "equal.csv").read_text()


def test_leaderboard_rows_are_strict_json(tmp_path):
    from competition.evaluate.leaderboard import add_record

    add_record(tmp_path / "board.md", {"name": "k", "top1": 0.5, "map@10": float("nan")})
    line = (tmp_path / "board.jsonl").read_text()
    assert "NaN" not in line and json.loads(line)["map@10"] is None


def test_sweep_names_stay_inside_runs_and_a_sweep_that_only_failed_exits_non_zero(tiny_competition, tmp_path):
    import yaml

    sweep = {"data": str(tiny_competition), "runs_dir": str(tmp_path / "runs"), "off_the_shelf": ["resnet18"]}
    sweep |= {"submissions_dir": str(tmp_path / "subs"), "leaderboard": str(tmp_path / "board.md")}
    escaping = tmp_path / "escape.yaml"
    escaping.write_text(yaml.safe_dump(sweep | {"name": "../../escape"}))
    one_line_error(invoke("sweep", escaping), "plain name")
    failing = tmp_path / "failing.yaml"
    failing.write_text(yaml.safe_dump(sweep | {"name": "failing"}))
    result = invoke("sweep", failing)
    assert result.exit_code == 1 and "every row of the sweep failed" in result.output, result.output


def test_sweep_footnote_says_why_submit_used_the_backbone():
    from competition.submit.models import FellBack
    from competition.sweep.results import results_table

    row = {"status": "done", "scores": {"top1": 0.5}, "seconds": 1}
    untold = results_table([row | {"label": "a", "fallback": FellBack.UNTOLD.value}])
    assert "| a ‡ |" in untold and "too few photos" in untold and "lost" not in untold
    lost = results_table([row | {"label": "a", "fallback": FellBack.LOST.value}])
    assert "| a † |" in lost and "lost" in lost and "too few" not in lost
    older = results_table([row | {"label": "a", "fallback": True}])  # a row of a version that fell back on losses only
    assert older == lost and results_table([row | {"label": "a", "fallback": ""}]).count("†") == 0


def test_a_submission_name_in_use_by_another_submit_is_refused(tiny_competition, tmp_path):
    with exclusive_use(tmp_path / "subs" / "twin.csv", "submission", lock_dir=tmp_path / "runs" / "submission-locks"):
        one_line_error(_quick_submit(tiny_competition, tmp_path, "--name", "twin"), "twin.csv is in use by")
    assert not (tmp_path / "board.md").exists() and not (tmp_path / "subs" / "twin.csv").exists()
    assert _quick_submit(tiny_competition, tmp_path, "--name", "twin").exit_code == 0  # free again


def test_names_in_two_unicode_forms_are_one_landmark(tiny_competition):
    import unicodedata

    from competition.data.discover import discover_competition

    before = discover_competition(tiny_competition)
    old = before.train_classes[0]
    decomposed, composed = unicodedata.normalize("NFD", "café-" + old), unicodedata.normalize("NFC", "café-" + old)
    assert decomposed != composed
    (tiny_competition / "train" / old).rename(tiny_competition / "train" / decomposed)  # as copied from macOS
    labels = tiny_competition / "labels.csv"
    labels.write_text(labels.read_text().replace(f",{old}\n", f",{composed}\n"))
    after = discover_competition(tiny_competition)
    queries = [r for r in after.query if r.label == composed]
    assert queries and composed in after.train_classes  # its queries count as seen, not unseen


def test_a_source_name_at_the_file_system_limit_gets_variants_that_fit(tiny_competition):
    class_dir = sorted((tiny_competition / "train").iterdir())[0]
    source = sorted(class_dir.iterdir())[0]
    long_name = "é" * 100 + "x" * 51 + ".jpg"  # 255 bytes: as long as a file name may be
    assert len(long_name.encode()) == 255
    shutil.copy(source, class_dir / long_name)
    result = invoke("augment", "--data", tiny_competition, "--recipe", "light", "--target", 20, "--workers", 1)
    assert result.exit_code == 0, result.output
    out = tiny_competition / "augmented" / class_dir.name
    manifest = (tiny_competition / "augmented" / "manifest.csv").read_text(encoding="utf-8")
    from_long = [line for line in manifest.splitlines() if long_name in line]
    assert from_long and all(len(line.split(",")[0].split("/")[-1].encode()) <= 255 for line in from_long)
    assert all(len(p.name.encode()) <= 255 for p in out.iterdir()) and len(list(out.iterdir())) == 20 - 5


def test_an_out_path_through_a_symlink_means_one_folder(tiny_competition, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "linktrain").symlink_to(tiny_competition / "train")
    result = invoke("augment", "--data", tiny_competition, "--out", "linktrain/../aug2", "--target", 6, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert (tiny_competition / "aug2" / "manifest.csv").is_file()  # where the OS resolves linktrain/..
    assert not (tmp_path / "aug2").exists() and not list(tmp_path.glob(".aug2*"))


def test_a_leaderboard_that_cannot_take_the_row_keeps_the_submission_and_says_how_to_record_it(
    tiny_competition, tmp_path
):
    board = tmp_path / "board.md"
    board.write_text("# Leaderboard\n\na leaderboard someone made read-only\n")
    board.chmod(0o444)
    result = _quick_submit(tiny_competition, tmp_path, "--name", "kept")
    one_line_error(result, "subs/kept.csv is written and kept", "compete score", "--record")
    assert (tmp_path / "subs" / "kept.csv").is_file()
    other = tmp_path / "other.md"
    recorded = invoke(
        "score", tmp_path / "subs" / "kept.csv", "--data", tiny_competition, "--record", "--leaderboard", other
    )
    assert recorded.exit_code == 0, recorded.output
    assert "| kept |" in other.read_text() and json.loads((tmp_path / "other.jsonl").read_text())["top1"] >= 0


# Round 4: no silently wrong ranking or score, no lost file.


def _solution(tmp_path, text):
    path = tmp_path / "solution.csv"
    path.write_text("id,images,Usage\n" + text)
    return path


def test_a_repeated_id_in_a_submission_row_scores_once_as_the_hosts_metric_does(tmp_path):
    from competition.evaluate.solution import read_solution, score_against_solution

    solution = read_solution(_solution(tmp_path, "q1,a b,Public\nq2,c d,Public\n"))
    submission = tmp_path / "sub.csv"
    submission.write_text("id,images\nq1,a a a b\nq2," + " ".join(["c"] * 100) + "\n")
    # by hand, as the hosts' metric skips a repeat but keeps its rank: q1 (1/1 + 2/4) / 2, q2 (1/1) / 2
    scores = score_against_solution(submission, solution)
    assert scores["public_map@100"] == pytest.approx(((1 + 2 / 4) / 2 + 1 / 2) / 2)


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ("q1,a,Public\nq2,b,Public\nq1,c,Private\n", "line 4: id 'q1' is given a second time"),
        ("q1,a,Public\n ,b,Public\n", "line 3: the id is blank"),
        ("q1,a,Ignored\nq2,None,Ignored\n", "every row is Ignored"),
    ],
)
def test_a_solution_file_that_cannot_be_scored_as_written_is_refused_in_one_line(tmp_path, rows, fragment):
    submission = tmp_path / "sub.csv"
    submission.write_text("id,images\nq1,a\n")
    one_line_error(invoke("score", submission, "--solution", _solution(tmp_path, rows)), fragment)


CLOSED_SET = Path(__file__).resolve().parents[1] / "scripts" / "closed_set.py"


def _closed_set(source, target):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(CLOSED_SET), str(source), str(target)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("where", ["source", "inside", "parent", "user folder"])
def test_closed_set_copy_never_deletes_the_source_or_a_users_folder(tiny_competition, tmp_path, where):
    thesis = tmp_path / "mywork" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("four years")
    target = {
        "source": tiny_competition,
        "inside": tiny_competition / "train" / "copy",
        "parent": tiny_competition / "..",
        "user folder": thesis.parent,
    }[where]
    before = files_under(tmp_path)
    done = _closed_set(tiny_competition, target)
    assert done.returncode != 0 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert files_under(tmp_path) == before and thesis.read_text() == "four years"


def test_closed_set_copy_keeps_query_subfolders_and_replaces_only_its_own_copy(tiny_competition, tmp_path):
    nested = tiny_competition / "query" / "day"
    nested.mkdir()
    first_query = sorted((tiny_competition / "query").glob("*.*"))[0]
    shutil.move(first_query, nested / first_query.name)
    labels = (tiny_competition / "labels.csv").read_text()
    (tiny_competition / "labels.csv").write_text(
        labels.replace(f"query/{first_query.name}", f"query/day/{first_query.name}")
    )
    target = tmp_path / "closed"
    for _ in range(2):  # the second run replaces the copy the first one made
        done = _closed_set(tiny_competition, target)
        assert done.returncode == 0, done.stderr
    from competition.data.discover import discover_competition

    copy, source = discover_competition(target), discover_competition(tiny_competition)
    seen = set(source.train_classes)
    assert [r.key for r in copy.query] == [r.key for r in source.query if r.label in seen]
    assert len(copy.gallery) == len(source.gallery) and copy.has_eval_labels
    assert not list(tmp_path.glob(".closed.partial"))


def test_closed_set_copy_without_labels_is_one_line_and_writes_nothing(tiny_competition, tmp_path):
    (tiny_competition / "labels.csv").unlink()
    done = _closed_set(tiny_competition, tmp_path / "closed")
    assert done.returncode != 0 and "needs labels.csv" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "closed").exists()


def test_a_file_that_is_not_a_leaderboard_is_never_overwritten(tiny_competition, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# My notes\n\nlr 3e-4 worked best\n")
    result = invoke(
        "submit", "--data", tiny_competition, "--runs-dir", tmp_path / "runs", "--submissions-dir", tmp_path / "subs",
        "--leaderboard", notes, "--no-flip", "--name", "n",
    )  # fmt: skip
    one_line_error(result, "notes.md is not a compete leaderboard", "not overwritten")
    assert notes.read_text() == "# My notes\n\nlr 3e-4 worked best\n" and not (tmp_path / "subs").exists()
    done = _quick_submit(tiny_competition, tmp_path, "--name", "kept")
    assert done.exit_code == 0, done.output
    board = tmp_path / "board.md"
    assert "Rows live in `board.jsonl`" in board.read_text()  # the header names its own rows
    data = tmp_path / "data.csv"
    data.write_text("image,class\na.jpg,x\n")
    recorded = invoke(
        "score", tmp_path / "subs" / "kept.csv", "--data", tiny_competition, "--record", "--leaderboard", data
    )
    one_line_error(recorded, "data.csv is not a compete leaderboard")
    assert data.read_text() == "image,class\na.jpg,x\n" and not (tmp_path / "data.jsonl").exists()


def test_report_replaces_only_a_page_it_wrote(tiny_competition, tmp_path):
    assert _quick_submit(tiny_competition, tmp_path, "--name", "r").exit_code == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my homepage</h1>")
    args = ("report", tmp_path / "subs" / "r.csv", "--data", tiny_competition, "--runs-dir", tmp_path / "runs")
    one_line_error(invoke(*args, "--out", site), "index.html that compete report did not write")
    assert (site / "index.html").read_text() == "<h1>my homepage</h1>" and files_under(site) == 1
    for _ in range(2):  # its own page it replaces
        assert invoke(*args, "--out", tmp_path / "report").exit_code == 0


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tiny_competition, tmp_path):
    levels = ["a0: &a0 [" + ", ".join(["x"] * 9) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nname: *a8\n")
    assert bomb.stat().st_size < 1000
    result = invoke("train", "--data", tiny_competition, "--config", bomb)
    one_line_error(result, "aliases are expanded")
    assert len(result.output) < 300


def test_a_long_wrong_value_is_quoted_short(tiny_competition, tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text("epochs: [" + ", ".join(["1"] * 10000) + "]\n")
    result = invoke("train", "--data", tiny_competition, "--config", config)
    one_line_error(result, "--epochs")
    assert len(result.output) < 300


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("dup.yaml", "epochs: 5\nepochs: 7\n", "key 'epochs' is given twice"),
        ("dup.json", '{"epochs": 5, "epochs": 7}', "key 'epochs' is given twice"),
    ],
)
def test_a_key_given_twice_in_a_config_is_refused(tiny_competition, tmp_path, name, text, fragment):
    config = tmp_path / name
    config.write_text(text)
    one_line_error(invoke("train", "--data", tiny_competition, "--config", config), fragment)


def test_a_nested_setting_that_is_not_a_mapping_is_one_line_and_a_bom_is_read(tiny_competition, tmp_path):
    from competition.settings.files import read_settings_file

    config = tmp_path / "submit.yaml"
    config.write_text("postprocess: [1, 2]\n")
    one_line_error(invoke("submit", "--data", tiny_competition, "--config", config), "'postprocess' must be a mapping")
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"epochs": 3}).encode())
    assert read_settings_file(with_bom) == {"epochs": 3}


def test_a_gem_exponent_that_overflows_is_refused_before_a_run_folder_is_made(tiny_competition, tmp_path):
    result = invoke("train", "--data", tiny_competition, "--runs-dir", tmp_path / "runs", "--gem-p", 60)
    one_line_error(result, "--gem-p must be <= 20")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "model_fn, fragment",
    [
        (lambda batch: batch.mean(dim=(2, 3)) * float("inf"), "not finite"),
        (lambda batch: torch.ones(len(batch), 4), "flat vector"),
        (lambda batch: torch.arange(4.0).expand(len(batch), 4), "the same vector"),
    ],
)
def test_vectors_that_cannot_rank_are_an_error_not_a_ranking(
    tiny_competition, tmp_path, model_fn, fragment, monkeypatch
):
    from competition.errors import CompeteError
    from competition.retrieval import embed
    from competition.retrieval.embed import Extraction, extract_features
    from competition.settings.model import View

    monkeypatch.setattr(embed, "CHECK_ROWS", 3)  # checked a block of rows at a time, judged over all
    paths = sorted((tiny_competition / "gallery").iterdir())
    assert len(paths) >= max(embed.FEWEST_TO_JUDGE, 2 * embed.CHECK_ROWS)
    with pytest.raises(CompeteError, match=fragment):
        extract_features(
            model_fn, paths, View(32, "square"), torch.device("cpu"), how=Extraction(progress=False, workers=0)
        )


def test_a_damaged_local_feature_cache_file_is_recomputed_with_a_warning(tiny_competition, tmp_path, caplog):
    from competition.retrieval.embed import file_key
    from competition.retrieval.verify import LocalFeatureCache

    photo = sorted((tiny_competition / "gallery").iterdir())[0]
    cache = LocalFeatureCache(tmp_path / "local")
    points, descriptors = cache.get(photo, file_key(photo))
    (stored,) = (tmp_path / "local").rglob("*.npz")
    stored.write_bytes(stored.read_bytes()[:40])  # cut short, as a kill or a full disk leaves it
    again_points, again_descriptors = LocalFeatureCache(tmp_path / "local").get(photo, file_key(photo))
    assert "damaged local-feature cache" in caplog.text
    assert np.array_equal(again_points, points) and again_descriptors.shape == descriptors.shape
    assert LocalFeatureCache(tmp_path / "local").get(photo, file_key(photo))[0].shape == points.shape  # rewritten


@pytest.fixture(scope="module")
def finished_run(tiny_competition_master, tmp_path_factory):
    from competition.train.loop import train

    runs = tmp_path_factory.mktemp("finished") / "runs"
    train(tiny_config(tiny_competition_master, runs, "done"), progress=False)
    return runs / "done"


def _edit_best(run, change):
    from competition.models.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(run / "best.pt")
    change(payload)
    save_checkpoint(run / "best.pt", payload)


def _edit_record(run: Path, **changes) -> None:
    summary = json.loads((run / "summary.json").read_text())
    summary["record"].update(changes)
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda run: (run / "summary.json").write_text("true"), "summary.json: holds bool"),
        (lambda run: (run / "summary.json").write_text("[]"), "summary.json: holds list"),
        (lambda run: (run / "summary.json").write_text('{"validation": {"uns'), "summary.json: damaged"),
        (lambda run: (run / "summary.json").write_text('{"validation": [1]}'), "'validation' must be an object"),
        (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json: holds list"),
        (lambda run: _edit_record(run, regime=5), "summary.json: the record's 'regime' must be text"),
        (lambda run: _edit_record(run, regime="weird"), "'regime' must be full or last, not 'weird'"),
        (  # a summary of v0.4 or before: the regime as config.json says it
            lambda run: [(run / "summary.json").write_text("{}"), (run / "config.json").write_text('{"regime": 5}')],
            "'regime' must be full or last, not 5",
        ),
        (
            lambda run: _edit_best(run, lambda p: p["model"].update(gem_p="three")),
            "model settings are damaged",
        ),
        (lambda run: _edit_best(run, lambda p: p.update(label_classifier={"weird": 1})), "label classifier is damaged"),
        (lambda run: _edit_best(run, lambda p: p.pop("projection")), "lack projection"),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it_before_anything_is_written(
    finished_run, tiny_competition, tmp_path, damage, fragment
):
    run = Path(shutil.copytree(finished_run, tmp_path / "runs" / "edited"))
    damage(run)
    one_line_error(_quick_submit(tiny_competition, tmp_path, "-m", run, "--name", "d"), fragment)
    assert not (tmp_path / "subs").exists() and not (tmp_path / "board.md").exists()


@pytest.mark.parametrize(
    "summary, guard",
    [({"beats_pretrained": {"seen": False}}, "fell back"), ({}, "no validation verdict: not guarded")],
)
def test_an_older_or_bare_summary_still_guards_or_says_it_cannot(
    finished_run, tiny_competition, tmp_path, summary, guard
):
    from competition.settings.submit import SubmitConfig
    from competition.submit.models import FellBack
    from competition.submit.run import submit

    run = Path(shutil.copytree(finished_run, tmp_path / "runs" / "older"))
    (run / "summary.json").write_text(json.dumps(summary))
    settings = dict(data=str(tiny_competition), runs_dir=str(tmp_path / "runs"), flip=False, name="o")
    settings |= dict(submissions_dir=str(tmp_path / "subs"), leaderboard=str(tmp_path / "board.md"))
    result = submit(SubmitConfig(model=[str(run)], landmarks="known", **settings), progress=False)
    assert guard in result.record["unseen_guard"] and result.landmarks == "known"
    # what was decided travels as data: the sweep reads it, never the note's words
    assert result.fell_back == ({"older": FellBack.LOST.value} if guard == "fell back" else {})


def test_a_run_without_best_pt_is_advised_only_what_train_accepts(tiny_competition, tmp_path):
    run = tmp_path / "runs" / "crashed"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"regime": "last"}')  # a last-layer run that stopped before best.pt
    result = _quick_submit(tiny_competition, tmp_path, "-m", run)
    one_line_error(result, "train it again")
    assert "--resume" not in result.output


def test_a_query_with_no_match_in_the_gallery_is_left_out_as_kaggle_does(tiny_competition, tmp_path):
    from competition.evaluate.metrics import score_by_group

    ranking = np.array([[0, 1], [1, 0], [0, 1]])
    scores = score_by_group(ranking, ["a", "b", "z"], ["a", "b"], map_k=2)["all"]
    assert scores["top1"] == 1.0 and scores["map@10"] == 1.0 and scores["queries"] == 2 and scores["left_out"] == 1
    labels = tiny_competition / "labels.csv"
    first_query = next(line for line in labels.read_text().splitlines() if line.startswith("query/"))
    labels.write_text(labels.read_text().replace(first_query, first_query.split(",")[0] + ",nowhere"))
    assert _quick_submit(tiny_competition, tmp_path, "--name", "s", "--landmarks", "new").exit_code == 0
    scored = invoke("score", tmp_path / "subs" / "s.csv", "--data", tiny_competition)
    assert scored.exit_code == 0 and "1 query with no photo of its landmark in the gallery left out" in scored.output


@pytest.mark.parametrize(
    "device, fragment", [("tpu", "must be cpu, cuda"), ("mps", "must be cpu, cuda"), ("cuda", "no CUDA")]
)
def test_a_device_this_machine_lacks_is_one_line(tiny_competition, tmp_path, device, fragment):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(_quick_submit(tiny_competition, tmp_path, "--device", device), fragment)
    one_line_error(
        invoke("train", "--data", tiny_competition, "--runs-dir", tmp_path / "r", "--device", device), fragment
    )
    assert not list(tmp_path.glob("r/**/config.json")) and not (tmp_path / "subs").exists()  # no run folder made


def test_a_file_of_five_a_row_shows_no_top10_or_p_at_10(tiny_competition, tmp_path):
    assert _quick_submit(tiny_competition, tmp_path, "--name", "five", "-k", 5).exit_code == 0
    scored = invoke("score", tmp_path / "subs" / "five.csv", "--data", tiny_competition)
    assert scored.exit_code == 0 and "top5" in scored.output
    assert "top10" not in scored.output and " p@10" not in scored.output and "nan" not in scored.output


def test_search_knobs_that_cannot_apply_fall_back_or_say_so(caplog):
    from competition.errors import CompeteError
    from competition.retrieval.search import Searcher, search

    gallery = np.random.default_rng(0).standard_normal((18, 16)).astype(np.float32)
    exact = search(gallery[:3], gallery, 5)[1]
    for factory in ("IVF4096,Flat", "PQ8", "IDMap,Flat", "OPQ4,IVF64,PQ4"):
        caplog.clear()
        searcher = Searcher(factory=factory)
        assert np.array_equal(search(gallery[:3], gallery, 5, index=searcher)[1], exact), factory
        assert searcher.exact and "exact search instead" in caplog.text and caplog.text.count("WARNING") == 1
    flat = Searcher(factory="Flat")
    search(gallery[:3], gallery, 5, index=flat)
    assert flat.exact  # brute force, not announced as approximate
    caplog.clear()
    search(gallery[:3], gallery, 5, index=Searcher("ivfpq"))
    assert "too few to train compressed codes" in caplog.text and caplog.text.count("WARNING") == 1
    caplog.clear()
    Searcher("exact", nprobe=8)
    assert "--nprobe has no effect on an exact index" in caplog.text
    with pytest.raises(CompeteError, match="at most 200 characters"):
        from competition.settings.submit import SubmitConfig

        SubmitConfig(index_factory="IVF1," * 5000)


def test_control_characters_in_names_are_printed_escaped(tiny_competition, tmp_path):
    import logging

    from competition.cli.base import _PrintableFormatter

    record = logging.LogRecord("x", logging.WARNING, "", 0, "gallery/%s.jpg: unreadable", ("\x1b[2J",), None)
    assert _PrintableFormatter("%(message)s").format(record) == "gallery/\\x1b[2J.jpg: unreadable"
    labels = tiny_competition / "labels.csv"
    hostile = "\x1b]0;owned\x07"
    first_class = labels.read_text().splitlines()[1].split(",")[1]
    labels.write_text(labels.read_text().replace(f",{first_class}\n", f",{hostile}\n"))
    assert _quick_submit(tiny_competition, tmp_path, "--name", "e", "--landmarks", "new").exit_code == 0
    scored = invoke("score", tmp_path / "subs" / "e.csv", "--data", tiny_competition)
    assert scored.exit_code == 0 and "\\x1b]0;owned\\x07" in scored.output and "\x1b" not in scored.output
    submission = tmp_path / "bad.csv"
    submission.write_text("query,rank_1\n\x1b[2J.jpg,x.jpg\n")
    refused = invoke("score", submission, "--data", tiny_competition)
    assert refused.exit_code == 1 and "\x1b" not in refused.output and "\\x1b[2J" in refused.output


@pytest.mark.parametrize(
    "text, fragment",
    [
        (f"seed: {2**64}", "--seed must be <= 4294967295"),
        ("embedding_dim: 1000000000", "--embedding-dim must be <= 8192"),
        ("samples_per_class: 1000000000", "--samples-per-class must be <= 1024"),
    ],
)
def test_huge_numbers_in_a_config_are_one_line_before_any_work(tiny_competition, tmp_path, text, fragment):
    config = tmp_path / "huge.yaml"
    config.write_text(text + "\n")
    one_line_error(
        invoke("train", "--data", tiny_competition, "--runs-dir", tmp_path / "r", "--config", config), fragment
    )
    assert not list(tmp_path.glob("r/**/config.json"))


def test_every_number_setting_declares_its_bounds():
    from competition.settings.submit import PostProcess, SubmitConfig
    from competition.settings.sweep import SweepFile
    from competition.settings.train import TrainConfig

    unbounded = [
        f"{model.__name__}.{name}"
        for model in (TrainConfig, SubmitConfig, PostProcess, SweepFile)
        for name, field in model.model_fields.items()
        if field.annotation in (int, float) and not any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata)
    ]
    assert unbounded == []


def test_a_sweep_grid_is_capped_and_its_ids_do_not_collide(tiny_competition, monkeypatch):
    from competition.errors import CompeteError
    from competition.sweep import plan as plan_module

    grid = {"lr": [0.001 * i for i in range(1, 101)], "epochs": list(range(1, 101)), "seed": list(range(100))}
    with pytest.raises(CompeteError, match="100 x 100 x 100 = 1,000,000 configurations; at most 1,000"):
        plan_module.plan_from_dict({"data": str(tiny_competition), "grid": grid})
    grid = {"lr": [0.001 * i for i in range(1, 21)], "epochs": list(range(1, 21)), "seed": [0, 1]}
    plan = plan_module.plan_from_dict({"data": str(tiny_competition), "grid": grid})
    assert len({c.id for c in plan.configurations}) == 800  # 20 x 20 x 2, every id its own
    monkeypatch.setattr(plan_module, "configuration_id", lambda *args: "same")
    with pytest.raises(CompeteError, match="two configurations share the id same"):
        plan_module.plan_from_dict({"data": str(tiny_competition), "grid": {"seed": [0, 1]}})


def test_a_nested_setting_given_as_its_own_object_still_works():
    from competition.settings.submit import PostProcess, SubmitConfig

    assert SubmitConfig(postprocess=PostProcess(re_ranking="k-reciprocal", rerank_k1=8)).postprocess.rerank_k1 == 8


# Round 5 (issue 48): nothing compete writes replaces a file it did not write; recognition files
# scored only when valid. Each test names the row of the issue it covers.


def test_row1_submit_never_replaces_a_file_it_did_not_write(tiny_competition, tmp_path):
    labels = (tiny_competition / "labels.csv").read_text()
    into_data = _submit(tiny_competition, tmp_path, "--submissions-dir", tiny_competition, "--name", "labels")
    one_line_error(into_data, "labels.csv exists and compete did not write it", "--name")
    assert (tiny_competition / "labels.csv").read_text() == labels and not (tmp_path / "board.md").exists()

    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "mine.csv").write_text("query,rank_1\nmy own work\n")  # in compete's header, yet the user's
    for fmt in ("csv", "kaggle", "recognition"):
        one_line_error(_submit(tiny_competition, tmp_path, "--name", "mine", "--format", fmt), "mine.csv")
    assert (subs / "mine.csv").read_text() == "query,rank_1\nmy own work\n"
    for _ in range(2):  # compete's own file is replaced by the next run of the same name
        assert _submit(tiny_competition, tmp_path, "--name", "ours").exit_code == 0
    (subs / "ours.csv").write_text((subs / "ours.csv").read_text() + "edited by hand\n")
    one_line_error(_submit(tiny_competition, tmp_path, "--name", "ours"), "ours.csv")


def test_row1_the_hosts_file_in_compete_s_format_is_not_replaced_either(tmp_path):
    from competition.errors import CompeteError
    from competition.evaluate.formats import KAGGLE
    from competition.evaluate.submission import write_submission

    theirs = tmp_path / "sample_submission.csv"  # the hosts' file, in the kaggle format compete writes too
    theirs.write_text("id,images\nq,g\n")
    with pytest.raises(CompeteError, match="compete did not write it"):
        write_submission(theirs, ["q.jpg"], [["h.jpg"]], KAGGLE)
    assert theirs.read_text() == "id,images\nq,g\n"
    theirs.write_text("")  # an empty file holds nothing to lose
    write_submission(theirs, ["q.jpg"], [["h.jpg"]], KAGGLE)
    assert theirs.read_text() == "id,images\nq,h\n"


@pytest.mark.parametrize("where", ["users files", "competition", "inside", "holding"])
def test_row2_row6_features_out_never_replaces_a_users_file_nor_the_competition(tiny_competition, tmp_path, where):
    kaggle = tmp_path / "glr"
    kaggle.mkdir()
    (kaggle / "train.csv").write_text("id,url,landmark_id\n1,http://x,5\n")
    out = {
        "users files": kaggle,
        "competition": tiny_competition,
        "inside": tiny_competition / "features",
        "holding": tmp_path,
    }[where]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = invoke("features", "-d", tiny_competition, "--out", out, "--runs-dir", tmp_path / "runs")
    one_line_error(result, f"--out {out}")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_row2_features_out_replaces_its_own_folder(tiny_competition, tmp_path):
    from competition.data.features import check_out_folder, write_meta, write_split

    out = tmp_path / "features"
    write_split(out, "train", ["a/1.jpg"], ["a"], np.ones((1, 4), np.float16))
    write_meta(out, {"train": "x"}, "m")
    check_out_folder(out, tiny_competition)  # compete's own: may be written again
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="notes.txt"):
        check_out_folder(out, tiny_competition)


def test_row3_closed_set_never_empties_a_source_named_like_its_working_folder(tiny_competition, tmp_path):
    source = Path(shutil.copytree(tiny_competition, tmp_path / ".x.partial"))
    before = files_under(source)
    done = _closed_set(source, tmp_path / "x")
    assert done.returncode != 0 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "working folder" in done.stderr and files_under(source) == before


def _recognition_file(tiny_competition, tmp_path, rows):
    from competition.data.discover import discover_competition

    found = discover_competition(tiny_competition)
    ids = [Path(r.name).stem for r in found.query]
    path = tmp_path / "r.csv"
    path.write_text("id,landmarks\n" + "".join(row.format(*ids, landmark=found.train_classes[0]) for row in rows))
    return path


@pytest.mark.parametrize(
    "rows, fragment",
    [
        (["{0},{landmark} nan\n", "{1},{landmark} 0.5\n"], "line 2"),  # row 4
        (["{0},{landmark} 0.5\n", "{1},{landmark} inf\n"], "line 3"),  # row 4
        (["{0},{landmark} 0.5\n", "{0},{landmark} 0.9\n"], "listed more than once"),  # row 5
        (["{0},{landmark} 0.5,extra\n"], "line 2: 3 fields"),  # row 7, recognition
    ],
)
def test_row4_row5_a_recognition_file_is_scored_only_when_valid(tiny_competition, tmp_path, rows, fragment):
    path = _recognition_file(tiny_competition, tmp_path, rows)
    one_line_error(invoke("score", path, "--data", tiny_competition), fragment)
    checked = invoke("validate", path, "--data", tiny_competition)
    assert checked.exit_code == 1 and fragment in checked.output, checked.output


def test_row7_a_kaggle_row_with_an_extra_field_is_refused(tiny_competition, tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("id,images\nq3,f z d,extra\n")
    for command in ("validate", "score"):
        one_line_error(invoke(command, path, "--data", tiny_competition), "line 2: more than 2 fields")
    solution = _solution(tmp_path, "q3,f,Public\n")
    one_line_error(invoke("score", path, "--solution", solution), "line 2: more than 2 fields")


def test_row8_gap_with_no_query_of_a_training_landmark_is_said_undefined(tiny_competition, tmp_path):
    import pandas as pd

    labels = pd.read_csv(tiny_competition / "labels.csv")
    labels.loc[labels["image"].str.startswith("query/"), "class"] = "nowhere_in_train"
    labels.to_csv(tiny_competition / "labels.csv", index=False)
    path = _recognition_file(tiny_competition, tmp_path, ["{0},{landmark} 0.5\n"])
    scored = invoke("score", path, "--data", tiny_competition)
    assert scored.exit_code == 0 and "GAP undefined" in scored.output and "Traceback" not in scored.output


def test_row10_submit_recognition_prints_its_gap(tiny_competition, tmp_path):
    result = _submit(tiny_competition, tmp_path, "--format", "recognition", "--name", "rec")
    assert result.exit_code == 0, result.output
    assert "GAP " in result.output and "\n\n" not in result.output.split("submission written")[1]


def _features_folder(root: Path, widths=(8, 8, 8), ids=None, change=None) -> Path:
    from competition.data.features import SPLITS, write_meta, write_split

    ids = ids or {"train": ["a/1.jpg", "a/2.jpg", "b/1.jpg"], "query": ["q1.jpg"], "gallery": ["g1.jpg", "g2.jpg"]}
    rng = np.random.default_rng(0)
    for split, width in zip(SPLITS, widths):
        rows = rng.normal(size=(len(ids[split]), width)).astype(np.float16)
        if change and split in change:
            change[split](rows)
        labels = [name.split("/")[0] if split == "train" else None for name in ids[split]]
        write_split(root, split, ids[split], labels, rows)
    write_meta(root, {split: "made-elsewhere" for split in SPLITS}, "efficientnet_lite0")
    return root


def test_row9_splits_of_different_widths_are_named_with_their_shapes(tmp_path):
    from competition.data.discover import discover_competition
    from competition.errors import CompeteError

    folder = _features_folder(tmp_path / "f", widths=(8, 8, 6))
    with pytest.raises(CompeteError, match=r"gallery\.npy \(2, 6\), query\.npy \(1, 8\)"):
        discover_competition(folder)


def test_row11_row14_rows_that_cannot_rank_are_named_and_zero_rows_counted(tmp_path, caplog):
    from competition.data.features import read_rows, row_paths
    from competition.errors import CompeteError

    def nan_in_row_1(rows):
        rows[1, 3] = np.nan

    folder = _features_folder(tmp_path / "f", change={"gallery": nan_in_row_1})
    with pytest.raises(CompeteError, match=r"gallery\.npy, row 1: not finite") as error:
        read_rows(row_paths(folder, "gallery", 2), "made-elsewhere")
    assert "gem-p" not in str(error.value)

    def zero_row_0(rows):
        rows[0] = 0

    folder = _features_folder(tmp_path / "g", change={"gallery": zero_row_0})
    read_rows(row_paths(folder, "gallery", 2), "made-elsewhere")
    assert "gallery.npy: 1 row all zero" in caplog.text


def test_rows_are_read_as_stored_a_block_at_a_time_in_any_order(tmp_path, monkeypatch):
    """Google Landmarks' 1.58M training rows: read in blocks, kept float16 when asked (training
    holds them so), never a float32 copy of the whole file first."""
    from competition.data import features

    monkeypatch.setattr(features, "ROWS_AT_ONCE", 2)
    ids = {"train": [f"{c}/{i}.jpg" for c, i in zip("aabbc", range(5))], "query": ["q.jpg"], "gallery": ["g.jpg"]}
    folder = _features_folder(tmp_path / "f", ids=ids)
    stored, order = np.load(folder / "train.npy"), [3, 0, 4, 1, 2]
    paths = [features.row_paths(folder, "train", 5)[i] for i in order]
    as_stored = features.read_rows(paths, "made-elsewhere", np.float16)
    assert as_stored.dtype == np.float16 and np.array_equal(as_stored, stored[order])
    assert np.array_equal(features.read_rows(paths, "made-elsewhere"), stored[order].astype(np.float32))


@pytest.mark.parametrize("bad", ["../escape.jpg", "a/../../b.jpg", " ", "/abs.jpg", "a\\b.jpg", "./q.jpg"])
def test_row15_ids_that_climb_or_are_blank_are_refused_when_read(tmp_path, bad):
    from competition.data.discover import discover_competition
    from competition.errors import CompeteError

    ids = {"train": ["a/1.jpg", "b/1.jpg"], "query": [bad], "gallery": ["g1.jpg", "g2.jpg"]}
    with pytest.raises(CompeteError, match=r"query\.csv: ids must be relative names"):
        discover_competition(_features_folder(tmp_path / "f", ids=ids))


def test_row12_a_bad_chosen_step_in_a_summary_names_the_summary(finished_run, tiny_competition, tmp_path):
    run = Path(shutil.copytree(finished_run, tmp_path / "runs" / "edited"))
    summary = json.loads((run / "summary.json").read_text())
    summary["record"]["postprocess"] = {"diffusion": True, "diffusion_alpha": 5}
    (run / "summary.json").write_text(json.dumps(summary))
    result = _quick_submit(tiny_competition, tmp_path, "-m", run, "--name", "d", "--if-worse", "keep")
    one_line_error(result, "summary.json: the post-processing its validation chose is not valid")
    assert "must be < 1.0" in result.output  # what is wrong, but as the summary's value, not a flag


def test_row13_a_scored_solution_row_without_images_is_refused(tmp_path):
    submission = tmp_path / "sub.csv"
    submission.write_text("id,images\nq1,a\n")
    solution = _solution(tmp_path, "q1,a,Public\nq2,None,Private\n")
    one_line_error(invoke("score", submission, "--solution", solution), "line 3: the Private row of 'q2'")


def test_row16_the_post_processing_of_an_ensemble_is_the_first_run_that_chose_one(tmp_path):
    from types import SimpleNamespace

    from competition.runs import RunRecord
    from competition.settings.submit import PostProcess
    from competition.submit.models import postprocess_of

    older = SimpleNamespace(record=RunRecord(), label="older", run_dir=tmp_path / "older")
    newer = SimpleNamespace(record=RunRecord(postprocess={"qe": 2}), label="newer", run_dir=tmp_path / "newer")
    steps, note = postprocess_of(PostProcess(), [older, newer], (10, 20), "mixed")
    assert steps.qe == 2 and note.endswith("(chosen by newer's validation)")
    assert "first run that chose some" in PostProcess.model_fields["from_run"].description


def test_every_write_at_a_path_the_user_names_goes_through_the_one_rule():
    """A grep-level check: a module that writes files either writes only in compete's own folders
    (runs, caches, a run folder) or asks io.may_replace (directly or through its checks) first."""
    import re

    package = Path(__file__).resolve().parents[1] / "competition"
    own_places = {  # module -> where it writes: folders compete makes and names itself
        "io.py": "the ledger of marks itself",
        "models/checkpoint.py": "a run folder",
        "train/run_folder.py": "a run folder",
        "train/full_layer.py": "a run folder",
        "retrieval/store.py": "the embedding cache under runs/",
        "retrieval/rerank/graph.py": "the re-ranking graph cache under runs/",
        "retrieval/verify.py": "the local-feature cache under runs/",
        "submit/record.py": "a submission's vectors under runs/",
        "report/plots.py": "a picture whose caller checked its folder (report, sweep, run curves)",
        "report/sheets.py": "a picture whose caller checked its path (report, preview)",
    }
    rule = re.compile(r"\b(may_replace|check_replaceable|foreign_files|write_submission_text|check_leaderboard)\(")
    writes = re.compile(r"\b(atomic_path|atomic_write_text|atomic_write_json)\(")
    unguarded = []
    for module in sorted(package.rglob("*.py")):
        name = module.relative_to(package).as_posix()
        text = module.read_text()
        if writes.search(text.replace(f"def {writes.pattern}", "")) and name not in own_places:
            if not rule.search(text):
                unguarded.append(name)
    assert not unguarded, f"modules writing files without the may-I-replace rule: {unguarded}"
    assert all((package / name).is_file() for name in own_places)
