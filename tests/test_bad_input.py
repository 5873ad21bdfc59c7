"""Messy folders and killed runs, through the real commands: each bad case is made here.

Every case either works (odd but valid photos), is skipped with a warning and counted
(unreadable photos; an error with --strict), or stops with one clear line and exit code
1; and nothing half-written is ever left behind.
"""

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from competition.cli import app
from competition.data.images import read_image
from competition.errors import CompeteError
from competition.io import WRITTEN
from competition.models.checkpoint import load_checkpoint, save_checkpoint
from competition.runs import BEST

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def photo(width=48, height=40, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def unreadable_files(folder: Path) -> list[Path]:
    """Files that look like photos but cannot be decoded; each must be skipped, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    photo().save(png, format="PNG")
    contents = {
        "truncated.jpg": jpeg_bytes(photo(200, 200))[:700],
        "truncated.png": png.getvalue()[:100],
        "zero-byte.jpg": b"",
        "notes.jpg": b"this is a text file, not a photo\n",
    }
    paths = []
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def odd_but_valid_files(folder: Path) -> list[Path]:
    """Photos in every awkward form a user may have; each must be read and used."""
    folder.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "cmyk.jpg": lambda p: photo().convert("CMYK").save(p),
        "deep-16bit.png": lambda p: Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16)).save(
            p
        ),
        "palette.png": lambda p: photo().convert("P").save(p),
        "rgba.png": lambda p: photo().convert("RGBA").save(p),
        "grayscale.jpg": lambda p: photo().convert("L").save(p),
        "rotated-exif.jpg": lambda p: photo(60, 30).save(p, exif=exif.tobytes()),
        "tiny-8x8.jpg": lambda p: photo(8, 8).save(p),
        "café été façade.jpg": lambda p: photo(seed=5).save(p),
    }
    paths = []
    for name, write in files.items():
        write(folder / name)
        paths.append(folder / name)
    os.symlink(paths[-1], folder / "linked.jpg")
    return paths + [folder / "linked.jpg"]


# --- images ------------------------------------------------------------------------------


def test_odd_but_valid_photos_are_read_correctly(tmp_path):
    paths = {p.name: p for p in odd_but_valid_files(tmp_path)}
    for path in paths.values():
        image = read_image(path)
        assert image.dtype == np.uint8 and image.shape[2] == 3
    assert read_image(paths["rotated-exif.jpg"]).shape[:2] == (60, 30)  # upright, as EXIF says
    assert read_image(paths["tiny-8x8.jpg"]).shape[:2] == (8, 8)
    assert read_image(paths["deep-16bit.png"]).max() == 255  # scaled, not clipped to white


def test_augment_uses_odd_photos_and_skips_unreadable_ones_by_name(tiny_competition):
    odd_class = tiny_competition / "train" / "odd photos"
    odd = odd_but_valid_files(odd_class)
    bad = unreadable_files(odd_class)
    (odd_class / "broken-link.jpg").symlink_to(tiny_competition / "no-such-file.jpg")
    sources_before = {p: p.read_bytes() for p in odd}

    result = invoke("augment", "--data", tiny_competition, "--recipe", "classic", "--target", 30, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert f"{len(bad)} skipped" in result.output and "(--strict to stop instead)" in result.output
    made = list((tiny_competition / "augmented" / "odd photos").iterdir())
    for source in odd[:-1]:  # every odd photo (the symlink resolves to the last one) got variants
        assert any(m.name.startswith(source.stem + "__") for m in made), source.name
    assert all(read_image(m).shape[2] == 3 for m in made)
    assert all(p.read_bytes() == data for p, data in sources_before.items())  # sources never touched

    strict = invoke(
        "augment",
        "--data",
        tiny_competition,
        "--recipe",
        "classic",
        "--target",
        30,
        "--workers",
        1,
        "--overwrite",
        "--strict",
    )
    assert strict.exit_code == 1 and "unreadable" in strict.output and "Traceback" not in strict.output


def _train(data, runs, name, *extra):
    return invoke(
        "train",
        "--data",
        data,
        "--runs-dir",
        runs,
        "--name",
        name,
        "--epochs",
        1,
        "--image-size",
        32,
        "--embedding-dim",
        8,
        "--no-augmented",
        "--no-pretrained",
        *extra,
    )


def test_train_skips_and_counts_unreadable_photos_or_stops_with_strict(tiny_competition, tmp_path):
    some_class = sorted((tiny_competition / "train").iterdir())[0]
    bad = unreadable_files(some_class)
    result = _train(tiny_competition, tmp_path, "skips")
    assert result.exit_code == 0, result.output
    assert f"{len(bad)} unreadable training photos skipped" in result.output
    summary = json.loads((tmp_path / "skips" / "summary.json").read_text())
    assert sorted(Path(m.split(":")[0]).name for m in summary["skipped_files"]) == sorted(p.name for p in bad)

    strict = _train(tiny_competition, tmp_path, "strict", "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.output and not (tmp_path / "strict").exists()


def test_train_names_a_class_with_no_readable_photo(tiny_competition, tmp_path):
    unreadable_files(tiny_competition / "train" / "all broken")
    result = _train(tiny_competition, tmp_path, "run")
    assert result.exit_code == 1 and "all broken" in result.output and "Traceback" not in result.output


def test_submit_counts_unreadable_query_and_gallery_images(tiny_competition, tmp_path):
    (tiny_competition / "gallery" / "g_broken.jpg").write_bytes(b"")
    (tiny_competition / "query" / "q_broken.jpg").write_bytes(jpeg_bytes(photo(100, 100))[:300])
    common = [
        "--data",
        tiny_competition,
        "--runs-dir",
        tmp_path / "runs",
        "--submissions-dir",
        tmp_path,
        "--leaderboard",
        tmp_path / "board.md",
    ]
    result = invoke("submit", "--name", "lenient", "-k", 3, *common)
    assert result.exit_code == 0, result.output
    assert "2 query/gallery images unreadable" in result.output
    assert "q_broken.jpg" in (tmp_path / "lenient.csv").read_text()  # still ranked: every query answered
    strict = invoke("submit", "--name", "strict", "--strict", *common)
    assert strict.exit_code == 1 and "broken" in strict.output and not (tmp_path / "strict.csv").exists()


# --- folders ------------------------------------------------------------------------------


def test_empty_train_folder_and_empty_competition_are_one_line_errors(tmp_path):
    (tmp_path / "comp" / "train").mkdir(parents=True)
    for command in ("augment", "train"):
        result = invoke(command, "--data", tmp_path / "comp")
        assert result.exit_code == 1 and "no class folders" in result.output and "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("submit", "--data", tmp_path / "empty")
    assert result.exit_code == 1 and "query/ and gallery/" in result.output


def test_same_file_name_in_two_classes_stays_two_photos(tiny_competition):
    train = tiny_competition / "train"
    first, second = sorted(train.iterdir())[:2]
    photo(seed=1).save(first / "IMG_0001.jpg")
    photo(seed=2).save(second / "IMG_0001.jpg")
    result = invoke("augment", "--data", tiny_competition, "--recipe", "light", "--target", 20, "--workers", 1)
    assert result.exit_code == 0, result.output
    manifest = (tiny_competition / "augmented" / "manifest.csv").read_text()
    assert f"{first.name}/IMG_0001__000.jpg,train/{first.name}/IMG_0001.jpg" in manifest
    assert f"{second.name}/IMG_0001__000.jpg,train/{second.name}/IMG_0001.jpg" in manifest


def test_identical_photo_in_two_classes_and_train_gallery_leakage_are_warned(tiny_competition, tmp_path, caplog):
    train = tiny_competition / "train"
    first, second = sorted(train.iterdir())[:2]
    shutil.copy(next(first.iterdir()), second / "copied.jpg")
    result = _train(tiny_competition, tmp_path, "run")
    assert result.exit_code == 0, result.output
    assert "same photo is in several classes" in caplog.text and "copied.jpg" in caplog.text

    caplog.clear()
    shutil.copy(next(first.iterdir()), tiny_competition / "gallery" / "g_leak.jpg")
    result = invoke(
        "submit",
        "--data",
        tiny_competition,
        "--runs-dir",
        tmp_path,
        "--submissions-dir",
        tmp_path,
        "--leaderboard",
        tmp_path / "board.md",
        "--name",
        "leaky",
    )
    assert result.exit_code == 0, result.output
    assert "also in train/" in caplog.text and "g_leak.jpg" in caplog.text


@pytest.mark.parametrize(
    "labels, message",
    [
        ("image,class\nquery/nope.jpg,x\n", "not found on disk"),
        ("image,label\n", "missing column"),
        ("image,class\n../../etc/passwd,x\n", "escapes"),
    ],
)
def test_bad_labels_stop_score_and_submit_with_one_line(tiny_competition, tmp_path, labels, message):
    (tiny_competition / "labels.csv").write_text(labels)
    submission = tmp_path / "s.csv"
    submission.write_text("query,rank_1\n")
    for args in (["score", submission], ["submit", "--runs-dir", tmp_path], ["validate", submission]):
        result = invoke(*args, "--data", tiny_competition)
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, args


# --- runs ---------------------------------------------------------------------------------


@pytest.fixture()
def trained_run(tiny_competition, tmp_path) -> Path:
    assert _train(tiny_competition, tmp_path / "runs", "good").exit_code == 0
    return tmp_path / "runs" / "good"


def _submit(data, run, tmp_path, *extra):
    return invoke(
        "submit",
        "--data",
        data,
        "-m",
        run,
        "--runs-dir",
        tmp_path / "runs",
        "--submissions-dir",
        tmp_path / "subs",
        "--leaderboard",
        tmp_path / "board.md",
        *extra,
    )


def test_checkpoint_of_another_backbone_or_version_is_refused(tiny_competition, tmp_path, trained_run):
    payload = load_checkpoint(trained_run / BEST)
    payload["model"]["backbone"] = "resnet18"
    save_checkpoint(trained_run / BEST, {k: v for k, v in payload.items() if k != "format_version"})
    result = _submit(tiny_competition, trained_run, tmp_path)
    assert result.exit_code == 1 and "do not match backbone resnet18" in result.output

    torch.save({"format_version": 99, "embedder": {}}, trained_run / BEST)
    result = _submit(tiny_competition, trained_run, tmp_path)
    assert result.exit_code == 1 and "not a compete checkpoint of format 1" in result.output


def test_half_written_run_folder_says_what_to_do(tiny_competition, tmp_path):
    killed = tmp_path / "runs" / "killed"
    killed.mkdir(parents=True)
    (killed / "config.json").write_text("{}")
    (killed / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a write cut short
    result = _submit(tiny_competition, killed, tmp_path)
    # no last.pt: train --resume would refuse it, so the advice is to train it again
    assert result.exit_code == 1 and "no best.pt" in result.output and "train it again" in result.output
    result = _train(tiny_competition, tmp_path / "runs", "killed")  # same name: starts afresh, no stale files
    assert result.exit_code == 0, result.output
    assert (killed / BEST).is_file()


def test_disk_full_while_writing_a_submission_keeps_the_previous_one(tiny_competition, tmp_path, monkeypatch):
    assert _submit(tiny_competition, "efficientnet_lite0", tmp_path, "--name", "sub").exit_code == 0
    previous = (tmp_path / "subs" / "sub.csv").read_bytes()
    real_write_text = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        if self.name.endswith(".tmp") and "sub.csv" in self.name:
            real_write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    result = _submit(tiny_competition, "efficientnet_lite0", tmp_path, "--name", "sub", "-k", 2)
    assert result.exit_code == 1 and "No space left on device" in result.output and "Traceback" not in result.output
    assert (tmp_path / "subs" / "sub.csv").read_bytes() == previous
    # no temporary file left; beside the file, compete's mark of what it wrote there (io.WRITTEN)
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == [WRITTEN, "sub.csv"]


def test_ctrl_c_during_submit_keeps_embeddings_and_rerun_finishes(tiny_competition, tmp_path, monkeypatch):
    from competition.models.embedder import Embedder

    real_pooled, calls = Embedder.pooled, []  # off-the-shelf: the backbone's pooled features

    def interrupted(self, images):
        calls.append(len(images))
        if len(calls) == 3:  # the second batch (each batch is embedded plain and mirrored)
            raise KeyboardInterrupt
        return real_pooled(self, images)

    monkeypatch.setattr(Embedder, "pooled", interrupted)
    result = _submit(tiny_competition, "efficientnet_lite0", tmp_path, "--name", "cut")
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not (tmp_path / "subs" / "cut.csv").exists()
    caches = list((tmp_path / "runs" / "feature-cache").glob("*.store"))  # off the shelf: the pooled features
    assert len(caches) == 1 and list(caches[0].glob("*.keys.npy"))  # the first batch kept...
    assert not list(caches[0].glob("*.tmp*"))  # ...atomically
    monkeypatch.setattr(Embedder, "pooled", real_pooled)
    assert _submit(tiny_competition, "efficientnet_lite0", tmp_path, "--name", "cut").exit_code == 0


def _interruptible() -> None:
    """A shell runs background jobs with SIGINT ignored, and children inherit that: undo it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop, code, said, workers",
    [(signal.SIGINT, 130, "interrupted", 2), (signal.SIGTERM, 143, "SIGTERM", 1)],  # a pool, and this process alone
)
def test_a_signal_during_augment_leaves_whole_files_and_rerun_completes(tiny_competition, stop, code, said, workers):
    target, sources = 100, 4  # ~400 variants: seconds of work after the first 20, so the signal lands mid-run
    expected = 4 * (target - sources)
    command = [
        sys.executable,
        "-m",
        "competition.cli",
        "augment",
        "--data",
        str(tiny_competition),
        "--recipe",
        "heavy",
        "--target",
        target,
        "--workers",
        workers,
    ]
    process = subprocess.Popen(
        [str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible
    )
    out_dir = tiny_competition / "augmented"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out_dir.rglob("*.jpg"))) < 20:
        time.sleep(0.05)
    process.send_signal(stop)  # to the parent alone, as `docker stop` and `kill PID` do
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert said in stderr and "re-run the same command" in stderr and "Traceback" not in stderr, stderr
    written = list(out_dir.rglob("*.jpg"))
    time.sleep(1.5)
    assert len(list(out_dir.rglob("*.jpg"))) == len(written)  # no orphaned worker writes on
    assert 20 <= len(written) < expected
    assert all(read_image(p).shape[2] == 3 for p in written)  # every file whole

    result = invoke("augment", "--data", tiny_competition, "--recipe", "heavy", "--target", target, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert f"{len(written)} already there" in result.output
    assert len(list(out_dir.rglob("*.jpg"))) == expected and not list(out_dir.rglob("*.tmp"))


def test_two_submits_at_once_both_land_in_the_leaderboard(tiny_competition, tmp_path):
    board = tmp_path / "board.md"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "competition.cli",
                "submit",
                "--data",
                str(tiny_competition),
                "--runs-dir",
                str(tmp_path / f"runs{i}"),
                "--submissions-dir",
                str(tmp_path),
                "--leaderboard",
                str(board),
                "--name",
                f"parallel-{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    table = board.read_text()
    assert "| parallel-1 |" in table and "| parallel-2 |" in table
    records = [json.loads(line) for line in board.with_suffix(".jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in records) == ["parallel-1", "parallel-2"]


# --- validate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, problem",
    [
        ("query,rank_1,rank_2\n", "missing"),
        ("query,rank_1,rank_2\nQ1,G1,G2\nQ1,G1,G2\nQ2,G1,G2\n", "more than once"),
        ("query,rank_1,rank_2\nQ1,G1,G2\nQ2,G1,G2\nQ9,G1,G2\n", "not in query/"),
        ("query,rank_1,rank_2\nQ1,G1,G2\nQ2,G1\n", "without exactly 2"),
        ("query,rank_1,rank_2\nQ1,G1,G7\nQ2,G1,G2\n", "not in gallery/: G7"),
        ("query,rank_1,rank_2\nQ1,G1,G1\nQ2,G1,G2\n", "gallery image twice"),
    ],
)
def test_validator_reports_each_problem(tmp_path, rows, problem):
    from competition.evaluate.validate import validate_submission

    (tmp_path / "s.csv").write_text(rows)
    problems = validate_submission(tmp_path / "s.csv", ["Q1", "Q2"], ["G1", "G2", "G3"], k=2)
    assert len(problems) == 1 and problem in problems[0], problems


def test_validate_command_accepts_what_submit_wrote_and_rejects_a_broken_copy(tiny_competition, tmp_path):
    assert _submit(tiny_competition, "efficientnet_lite0", tmp_path, "--name", "v", "-k", 3).exit_code == 0
    written = tmp_path / "subs" / "v.csv"
    result = invoke("validate", written, "--data", tiny_competition, "-k", 3)
    assert result.exit_code == 0 and "valid" in result.output
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(written.read_text().splitlines()[:-1]) + "\n")
    result = invoke("validate", broken, "--data", tiny_competition)
    assert result.exit_code == 1 and "1 query missing" in result.output


# --- upload (the kaggle client replaced at its boundary: no network here) ------------------


class FakeKaggleApi:
    calls: list = []
    fail_with: Exception | None = None

    def authenticate(self):
        self.calls.append(("authenticate",))

    def competition_submit(self, file_name, message, competition):
        if self.fail_with:
            raise self.fail_with
        self.calls.append(("submit", file_name, message, competition))
        return "Successfully submitted"

    def competition_submit_code(self, file_name, message, competition, kernel=None, kernel_version=None):
        self.calls.append(("submit_code", file_name, message, competition, kernel, kernel_version))
        return "Successfully submitted"


@pytest.fixture()
def fake_kaggle(monkeypatch, tmp_path):
    import types

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = FakeKaggleApi
    FakeKaggleApi.calls, FakeKaggleApi.fail_with = [], None
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    return FakeKaggleApi


def test_upload_validates_sends_and_records(tiny_competition, tmp_path, fake_kaggle, monkeypatch):
    board = tmp_path / "board.md"
    assert (
        _submit(
            tiny_competition, "efficientnet_lite0", tmp_path, "--name", "final", "-k", 3, "--leaderboard", board
        ).exit_code
        == 0
    )
    upload = [
        "upload",
        tmp_path / "subs" / "final.csv",
        "--competition",
        "landmarks-2026",
        "--message",
        "lite0 GeM",
        "--data",
        tiny_competition,
        "--leaderboard",
        board,
    ]

    no_credentials = invoke(*upload)
    assert no_credentials.exit_code == 1 and "no Kaggle credentials" in no_credentials.output
    assert fake_kaggle.calls == [] and "lite0 GeM" not in board.read_text()

    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    fake_kaggle.fail_with = ConnectionError("Name or service not known")
    offline = invoke(*upload)
    assert offline.exit_code == 1 and "ConnectionError" in offline.output and "nothing was recorded" in offline.output
    assert "lite0 GeM" not in board.read_text()

    fake_kaggle.fail_with = None
    assert invoke(*upload).exit_code == 0
    assert fake_kaggle.calls[-1] == ("submit", str(tmp_path / "subs" / "final.csv"), "lite0 GeM", "landmarks-2026")
    row = next(line for line in board.read_text().splitlines() if line.startswith("| final |"))
    assert "lite0 GeM" in row
    record = json.loads(board.with_suffix(".jsonl").read_text().splitlines()[-1])
    from competition.io import sha256_of_file

    assert record["uploads"][0]["sha256"] == sha256_of_file(tmp_path / "subs" / "final.csv")


def test_upload_sends_a_glr_competition_only_its_own_format_and_says_what_it_sends(
    tiny_competition, tmp_path, fake_kaggle, monkeypatch
):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    board = tmp_path / "board.md"
    for fmt in ("csv", "kaggle"):
        made = _submit(
            tiny_competition,
            "efficientnet_lite0",
            tmp_path,
            "--name",
            f"x-{fmt}",
            "--format",
            fmt,
            "--leaderboard",
            board,
        )
        assert made.exit_code == 0, made.output

    def upload(path, competition="landmark-retrieval-2021"):
        return invoke(
            "upload",
            path,
            "--competition",
            competition,
            "--message",
            "m",
            "--data",
            tiny_competition,
            "--leaderboard",
            board,
        )

    ours = upload(tmp_path / "subs" / "x-csv.csv")  # compete's query,rank_1... with .jpg names: would score 0
    assert ours.exit_code == 1 and fake_kaggle.calls == [] and "nothing was sent" in ours.output
    assert "--format kaggle" in ours.output and "-m efficientnet_lite0" in ours.output  # the one command to run
    theirs = upload(tmp_path / "subs" / "x-kaggle.csv")
    assert theirs.exit_code == 0, theirs.output
    assert "sending" in theirs.output and "id,images format" in theirs.output
    assert fake_kaggle.calls[-1][0] == "submit" and fake_kaggle.calls[-1][1].endswith("x-kaggle.csv")
    # a competition whose format we do not know gets the file as it is, and is told which format that is
    other = upload(tmp_path / "subs" / "x-csv.csv", competition="landmarks-2026")
    assert other.exit_code == 0 and "compete's CSV format" in other.output


def test_upload_refuses_an_invalid_file_before_sending(tiny_competition, tmp_path, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    broken = tmp_path / "broken.csv"
    broken.write_text("query,rank_1\nq_0001.jpg,not-in-gallery.jpg\n")
    result = invoke(
        "upload",
        broken,
        "--competition",
        "x",
        "--message",
        "m",
        "--data",
        tiny_competition,
        "--leaderboard",
        tmp_path / "board.md",
    )
    assert result.exit_code == 1 and "not uploaded" in result.output and "not-in-gallery.jpg" in result.output
    assert fake_kaggle.calls == []


def test_real_kaggle_client_without_credentials_is_one_line(tmp_path, monkeypatch, capsys):
    """The real client prints a page and calls exit(1) when it cannot authenticate: one line instead."""
    import competition.evaluate.upload as upload

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in [m for m in sys.modules if m == "kaggle" or m.startswith("kaggle.")]:
        monkeypatch.delitem(sys.modules, name)
    assert upload.credentials_found() is None
    with pytest.raises(CompeteError, match="could not authenticate.*KAGGLE_API_TOKEN"):
        upload.kaggle_api()
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("KAGGLE_API_TOKEN", "abc")
    assert upload.credentials_found() == "environment (KAGGLE_API_TOKEN)"
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    (tmp_path / "home" / ".kaggle" / "access_token").write_text("abc")
    assert upload.credentials_found().endswith("access_token")


def test_upload_reports_the_real_import_error(tmp_path, monkeypatch):
    import competition.evaluate.upload as upload

    def broken(name):
        raise ModuleNotFoundError("No module named 'six'")

    monkeypatch.setattr(upload.importlib, "import_module", broken)
    with pytest.raises(CompeteError, match="No module named 'six'"):
        upload.kaggle_api()


def test_code_competition_submits_the_notebook(tiny_competition, tmp_path, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token")
    board = tmp_path / "board.md"
    assert (
        _submit(
            tiny_competition, "efficientnet_lite0", tmp_path, "--name", "code", "-k", 3, "--leaderboard", board
        ).exit_code
        == 0
    )
    result = invoke(
        "upload",
        tmp_path / "subs" / "code.csv",
        "--competition",
        "glr-2026",
        "--message",
        "v1",
        "--data",
        tiny_competition,
        "--leaderboard",
        board,
        "--notebook",
        "me/landmarks",
        "--version",
        3,
    )
    assert result.exit_code == 0, result.output
    assert fake_kaggle.calls[-1] == ("submit_code", "code.csv", "v1", "glr-2026", "me/landmarks", 3)


def test_sigterm_stops_any_command_with_one_line(capsys):
    """train and submit go through the same handler as augment: SIGTERM is Ctrl-C with its own code."""
    import os

    import typer

    from competition.cli import base as cli

    previous = signal.getsignal(signal.SIGTERM)
    try:
        cli._stop_on_sigterm()
        with pytest.raises(typer.Exit) as stopped:
            cli._run(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.exit_code == 143
    assert "stopped by SIGTERM: finished files are kept" in capsys.readouterr().err


@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs of a few hundred kilobytes to fill (mounting needs root, as CI runs; else skipped)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()

    def mount(size: str) -> Path:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        return folder

    yield mount
    subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)  # mapped cache files may hold it


def test_disk_full_during_augment_is_one_line_naming_the_folder_and_rerun_resumes(tiny_competition, small_disk):
    out = small_disk("256k") / "augmented"
    args = ["augment", "--data", tiny_competition, "--out", out, "--recipe", "light", "--target", 300]
    result = invoke(*args, "--workers", 1)
    assert result.exit_code == 1, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert f"disk full: cannot write to {out}" in result.output and "re-run the same command" in result.output
    assert "skipped:" not in result.output  # no source photo blamed
    written = len(list(out.rglob("*.jpg")))
    assert written > 0 and f"{written} variants written by this run" in result.output


def test_disk_full_during_submit_names_the_cache_and_keeps_nothing_half_written(tiny_competition, small_disk):
    runs = small_disk("48k")
    result = _submit(tiny_competition, "efficientnet_lite0", runs, "--name", "full", "--batch-size", 4)
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert "disk full: cannot write the embedding cache" in result.output and "re-run" in result.output
    assert not list(runs.rglob("*.tmp"))
