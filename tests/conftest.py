"""Small data the tests make themselves: a tiny landmark competition and odd image files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from competition.data.sample import SampleConfig, make_sample_competition  # noqa: E402

TINY = SampleConfig(seen_classes=4, unseen_classes=2, train_per_class=4, query_per_class=1, gallery_per_class=2,
                    size=64, seed=3)


@pytest.fixture(scope="session")
def tiny_competition_master(tmp_path_factory) -> Path:
    return make_sample_competition(tmp_path_factory.mktemp("tiny") / "competition", TINY, progress=False)


@pytest.fixture()
def tiny_competition(tiny_competition_master, tmp_path) -> Path:
    """A private copy per test, so tests may add or break files."""
    import shutil

    return Path(shutil.copytree(tiny_competition_master, tmp_path / "competition"))
