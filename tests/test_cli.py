"""The whole path through the real CLI (Typer's runner) on a tiny generated competition."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from competition.cli import app
from competition.models.checkpoint import load_run_embedder
from competition.models.embedder import build_embedder
from competition.settings.model import ModelSettings

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def _train_args(data, runs, name, regime="last", epochs=3):
    return [
        "train",
        "--data",
        data,
        "--runs-dir",
        runs,
        "--name",
        name,
        "--regime",
        regime,
        "--epochs",
        epochs,
        "--image-size",
        64,
        "--embedding-dim",
        16,
        "--batch-size",
        16,
    ]


def _backbone_changed(run_dir) -> bool:
    trained, _, _ = load_run_embedder(run_dir)
    pretrained, _ = build_embedder(ModelSettings(image_size=64))
    pairs = zip(trained.backbone.state_dict().values(), pretrained.backbone.state_dict().values())
    return any(not torch.equal(a, b) for a, b in pairs)


def test_augment_train_submit_score_leaderboard(tiny_competition, tmp_path):
    runs, subs, board = tmp_path / "runs", tmp_path / "submissions", tmp_path / "leaderboard.md"
    out = ok("augment", "--data", tiny_competition, "--recipe", "light", "--target", 6, "--workers", 1)
    assert "8 written" in out
    train_out = ok(*_train_args(tiny_competition, runs, "last"))
    assert "head whitening" in train_out and "unseen" in train_out  # the verdict on held-out landmarks is printed
    run = runs / "last"
    for name in ("config.json", "metrics.csv", "best.pt", "summary.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["provenance"]["data_fingerprint"] and config["weights_origin"].startswith("package:")
    assert config["provenance"]["folds"] == 4 and config["head_resolved"] == "whitening"
    assert not _backbone_changed(run)  # last-layer regime: only the projection/head train
    ok(*_train_args(tiny_competition, runs, "softmax", epochs=1), "--head", "softmax")
    assert (runs / "softmax" / "curves.png").is_file()  # a loss head has epochs to draw

    common = ["--data", tiny_competition, "--runs-dir", runs, "--submissions-dir", subs, "--leaderboard", board]
    out = ok("submit", "-m", run, "--name", "trained", "-k", 3, *common)
    assert "unseen" in out and "top1" in out
    with open(subs / "trained.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["query", "rank_1", "rank_2", "rank_3"]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.name for p in (tiny_competition / "query").iterdir())
    assert all(len(set(r[1:])) == 3 for r in rows[1:])

    ok(
        "submit",
        "-m",
        "efficientnet_lite0",
        "-m",
        "last",
        "--ensemble-weights",
        "1,0.5",
        "--flip",
        "--name",
        "ensemble",
        *common,
    )
    ok("submit", "-m", "softmax", "--if-worse", "keep", "--name", "softmax", *common)
    table = board.read_text()
    assert "| trained |" in table and "| ensemble |" in table and "efficientnet_lite0 + efficientnet_lite0" in table
    trained_row = next(line for line in table.splitlines() if line.startswith("| trained |"))
    assert "light×6" not in trained_row  # the whitening is fitted on the original photos only
    assert "light×6" in table  # a loss head trains on the variants: the recipe is recorded

    scored = ok("score", subs / "trained.csv", "--data", tiny_competition)
    assert "top1" in scored and "seen" in scored
    assert "ensemble" in ok("leaderboard", board)

    # the same submission from features written once (data/features.py), read as --data
    features = tmp_path / "features"
    out = ok("features", "--data", tiny_competition, "--out", features, "--runs-dir", runs, "--image-size", 64)
    assert f"features written: {features}" in out.replace("\n", "")
    ok("submit", "-m", run, "--name", "rows", "-k", 3, *common[2:], "--data", features)
    assert (subs / "rows.csv").read_text() == (subs / "trained.csv").read_text()


def test_full_regime_trains_the_backbone(tiny_competition, tmp_path):
    # WiSE-FT off: on this tiny set it may rightly choose alpha 0 (the pretrained weights) for best.pt
    ok(
        *_train_args(tiny_competition, tmp_path / "runs", "full", regime="full", epochs=1),
        "--no-augmented",
        "--no-wise-ft",
    )
    assert _backbone_changed(tmp_path / "runs" / "full")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/nonexistent/place"], "not found"),
        (["submit", "--data", "/nonexistent/place"], "not found"),
        (["augment", "--data", "/nonexistent/place"], "not found"),
        (["augment", "--recipe", "no-such-recipe"], "unknown recipe"),
        (["train", "--backbone", "resnet9000"], "unknown backbone"),
        (["train", "--backbone", "efficentnet_lite0"], "(did you mean 'efficientnet_lite0'"),
        (["score", "/nonexistent/submission.csv"], "submission.csv: submission file not found"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_missing_run_is_named(tiny_competition, tmp_path):
    result = invoke(
        "submit", "--data", tiny_competition, "-m", tmp_path / "runs" / "ghost", "--runs-dir", tmp_path / "runs"
    )
    assert result.exit_code == 1 and "ghost" in result.output


def test_models_lists_backbones_and_weight_availability():
    out = ok("models")
    assert "efficientnet_lite0" in out and "yes (package" in out and "resnext101_32x8d" in out
    listed = json.loads(ok("models", "--json"))
    lite0 = next(row for row in listed["backbones"] if row["backbone"] == "efficientnet_lite0")
    assert lite0["dim"] == 1280 and lite0["weights"]["here"] and listed["search"].startswith("faiss")


def test_report_page_shows_queries_with_green_and_red_frames(tiny_competition, tmp_path):
    import numpy as np
    from PIL import Image

    from competition.report.sheets import GREEN, RED

    common = ["--data", tiny_competition, "--runs-dir", tmp_path / "runs"]
    ok("submit", *common, "--name", "sub", "-k", 3, "--submissions-dir", tmp_path, "--leaderboard", tmp_path / "b.md")
    ok("report", tmp_path / "sub.csv", *common, "--out", tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    for picture in ("queries.png", "per_class.png", "confusion.png", "embedding_map.png"):
        assert f'src="{picture}"' in page and (tmp_path / "report" / picture).stat().st_size > 1000
    assert "<th>unseen</th>" in page
    sheet = np.asarray(Image.open(tmp_path / "report" / "queries.png").convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(sheet, axis=0)}
    assert GREEN in colours and RED in colours  # the tiny set has both right and wrong matches
    from competition.io import _umask

    assert (tmp_path / "report" / "index.html").stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600


def test_training_prints_a_line_per_epoch_when_stderr_is_not_a_terminal(tiny_competition, tmp_path, caplog):
    import logging

    logging.getLogger("competition.train").setLevel(logging.NOTSET)
    caplog.handler.setLevel(logging.INFO)  # record what reaches the handlers; the CLI decides what is logged
    ok(
        *_train_args(tiny_competition, tmp_path / "runs", "logged", regime="full", epochs=2),
        "--no-augmented",
        "--no-wise-ft",
    )
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"] and all("loss" in line for line in epochs)


def test_piped_progress_is_a_line_per_interval_of_long_work_and_nothing_for_quick_work(monkeypatch, capsys):
    from competition import progress

    assert list(progress.steps(range(3), "quick")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal: piped, and quick
    monkeypatch.setattr(progress, "PIPED_EVERY", 0.0)  # every step "long"
    assert list(progress.steps(range(3), "folds", unit="fold")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "folds: 1/3 fold",
        "folds: 2/3 fold",
        "folds: 3/3 fold",
    ]
    assert list(progress.steps(iter([5]), "unknown length", enabled=False)) == [5]


NOTEBOOK = Path(__file__).parents[1] / "examples" / "kaggle-notebook.ipynb"


def _execute(notebook, folder: Path) -> None:
    """Run a notebook's cells in a fresh kernel started in `folder`; the kernel inherits os.environ.
    Not in tmp_path itself: a "competition" folder there would shadow the package."""
    from nbclient import NotebookClient

    folder.mkdir()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["train here", "attached run", "attached features"])
def test_the_kaggle_notebook_runs_end_to_end_and_writes_submission_csv(tiny_competition, tmp_path, monkeypatch, path):
    """examples/kaggle-notebook.ipynb executed as Kaggle would, its paths pointed at the tiny set:
    training in the notebook (capped), submitting with a run folder attached as a dataset, or
    training on a features folder attached as one (Google Landmarks' path) and submitting on photos."""
    import nbformat
    from conftest import tiny_config

    from competition.settings.features import FeaturesConfig
    from competition.submit.features import export_features
    from competition.train.loop import train

    out = tmp_path / "out"
    environment = {"COMPETE_DATA": str(tiny_competition), "COMPETE_OUT": str(out), "COMPETE_WHEELS": "/none"}
    environment["COMPETE_RUN"] = str(tmp_path / "attached" / "run")
    environment["COMPETE_FEATURES"] = str(tmp_path / "attached" / "features")
    if path == "attached run":
        train(tiny_config(tiny_competition, tmp_path / "attached", "run"), progress=False)
    if path == "attached features":
        elsewhere = FeaturesConfig(
            data=str(tiny_competition), out=environment["COMPETE_FEATURES"], runs_dir=str(tmp_path / "elsewhere")
        )
        export_features(elsewhere, progress=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    _execute(nbformat.read(NOTEBOOK, as_version=4), tmp_path / "kaggle-working")
    lines = (out / "submission.csv").read_text().splitlines()
    assert lines[0] == "id,images" and len(lines) == 1 + len(list((tiny_competition / "query").iterdir()))
    assert (out / "runs" / "lite0" / "best.pt").is_file() == (path != "attached run")
    if path == "attached features":  # every row of the features, none of the training photos
        assert json.loads((out / "runs/lite0/config.json").read_text())["data"] == environment["COMPETE_FEATURES"]


def _stand_in_wheel(folder: Path) -> Path:
    """A wheel of one empty module, standing in for the carried ones (faiss-cpu...) this test does not download."""
    import zipfile

    info = "standin-1.0.dist-info"
    files = {
        "standin.py": "",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: standin\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    path = folder / "standin-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


@pytest.mark.slow
def test_the_notebooks_install_cell_installs_the_wheel_folder_offline_and_checks_it(tmp_path, monkeypatch):
    """The notebook's first cells as Kaggle runs them: compete's own wheel, built from this checkout,
    and a stand-in for the carried ones, installed with no index (into a folder, not this venv)."""
    import shutil

    import nbformat

    wheels, installed = tmp_path / "compete-wheels", tmp_path / "site"
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline, as on Kaggle: pip may not reach an index
    build = [sys.executable, "-m", "pip", "wheel", NOTEBOOK.parents[1], "--no-deps", "--no-build-isolation", "-q"]
    made_build = not (NOTEBOOK.parents[1] / "build").exists()
    subprocess.run([str(a) for a in [*build, "-w", wheels]], check=True, timeout=300)
    if made_build:  # setuptools' scratch folder in the checkout: ours to remove
        shutil.rmtree(NOTEBOOK.parents[1] / "build")
    _stand_in_wheel(wheels)
    monkeypatch.setenv("COMPETE_WHEELS", str(wheels))
    monkeypatch.setenv("PIP_TARGET", str(installed))  # pip installs into a folder, leaving this venv as it is
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells = notebook.cells[:2]  # the install cell and its check; the rest is the end-to-end test's
    _execute(notebook, tmp_path / "kaggle-working")
    assert (installed / "competition" / "requirements.py").is_file() and (installed / "standin.py").is_file()
    printed = "".join(output.get("text", "") for output in notebook.cells[1].outputs)
    assert "every requirement met" in printed  # the check ran, against this environment
    assert list(installed.glob("compete-*.dist-info"))


def test_a_missing_or_old_requirement_is_named_with_the_wheel_to_add():
    from competition.requirements import CARRIED, PLATFORM, unmet

    assert unmet() == []  # this environment has everything compete and the carried wheels need
    lines = unmet(("timm>=99", "no-such-distribution"))
    assert lines[0].startswith("timm: ") and "installed, compete needs >=99" in lines[0]
    assert lines[1].startswith("no-such-distribution: missing")
    assert all(f"--platform {PLATFORM} " in line and "pip download --no-deps" in line for line in lines)
    assert {"simsimd", "stringzilla"} <= set(CARRIED)  # albucore imports them at module level


def test_a_requirement_met_by_another_build_of_the_same_module_is_met(monkeypatch):
    """Kaggle's image may have opencv-python where compete names opencv-python-headless (one cv2)."""
    from importlib import metadata

    from competition import requirements

    real = metadata.version

    def version(name: str) -> str:
        if name == "opencv-python-headless":
            raise metadata.PackageNotFoundError(name)
        return "4.10.0" if name == "opencv-python" else real(name)

    monkeypatch.setattr(requirements.metadata, "version", version)
    assert requirements.unmet(("opencv-python-headless>=4.9",)) == []
    (line,) = requirements.unmet(("opencv-python-headless>=5",))
    assert line.startswith("opencv-python-headless: opencv-python 4.10.0 installed, compete needs >=5")


def test_the_wheel_recipe_resolves_what_pip_install_gets_here(tmp_path):
    """The recipe's platform (Kaggle's manylinux_2_28, Python 3.11) resolves each carried wheel to
    the version a plain `pip install` picks on this machine: no faiss-cpu pinned years back by an
    old platform tag. Asks the package index, as CI's install does."""
    import json

    from competition.requirements import CARRIED, download_command

    def resolved(*platform: str) -> dict[str, str]:
        report = tmp_path / f"report{len(platform)}.json"
        ask = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "-q"]
        done = subprocess.run(
            [*ask, "--report", str(report), *platform, *CARRIED], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.skip(f"the package index did not answer: {done.stderr.strip()[-300:]}")
        return {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}

    recipe = download_command(CARRIED, tmp_path)
    platform = recipe[recipe.index("--python-version") : recipe.index(CARRIED[0])]
    kaggle = resolved(*platform, "--target", str(tmp_path / "target"))  # pip wants a target for another platform
    assert kaggle == resolved() and len(kaggle) == len(CARRIED)
