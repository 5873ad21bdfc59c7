"""Small data the tests make themselves: a tiny landmark competition and odd image files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from competition.data.sample import SampleConfig, make_sample_competition  # noqa: E402


def pytest_collection_modifyitems(items):
    """A test on a competition folder (it trains, submits or augments) is marked `competition`: the
    quick subset, `-m "not slow and not competition"`, leaves those out (README)."""
    for item in items:
        if "tiny_competition" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.competition)


TINY = SampleConfig(
    seen_classes=4, unseen_classes=2, train_per_class=4, query_per_class=1, gallery_per_class=2, size=64, seed=3
)


@pytest.fixture(scope="session")
def tiny_competition_master(tmp_path_factory) -> Path:
    return make_sample_competition(tmp_path_factory.mktemp("tiny") / "competition", TINY, progress=False)


@pytest.fixture()
def tiny_competition(tiny_competition_master, tmp_path) -> Path:
    """A private copy per test, so tests may add or break files."""
    import shutil

    return Path(shutil.copytree(tiny_competition_master, tmp_path / "competition"))


def tiny_config(data, runs, name, **overrides):
    """Training settings that run in seconds on the tiny competition (random init, 32 px)."""
    from competition.settings.train import TrainConfig

    settings = dict(
        data=str(data),
        runs_dir=str(runs),
        run_name=name,
        pretrained=False,
        image_size=32,
        embedding_dim=16,
        batch_size=4,
        epochs=2,
        use_augmented=False,
        lr=1e-2,
        warmup_epochs=0,
    )
    return TrainConfig(**(settings | overrides))


def tiny_submit_config(data, tmp_path, models=("run",), **overrides):
    """Submit settings for runs trained under tmp_path/runs, writing nothing outside tmp_path."""
    from competition.settings.submit import SubmitConfig

    settings = dict(
        data=str(data),
        model=list(models),
        runs_dir=str(tmp_path / "runs"),
        submissions_dir=str(tmp_path / "subs"),
        leaderboard=str(tmp_path / "board.md"),
        if_worse="keep",
    )
    return SubmitConfig(**(settings | overrides))


def state_of(run_dir, part="embedder"):
    """A part of a run's last.pt (embedder, criterion, optimizer...)."""
    from competition.models.checkpoint import load_checkpoint
    from competition.runs import LAST

    return load_checkpoint(Path(run_dir) / LAST)[part]
