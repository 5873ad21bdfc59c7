"""A sweep file's keys (`compete sweep FILE`); its `train:` and `submit:` entries are the
training and submit settings, spelled as their flags."""

from __future__ import annotations

from typing import Any, ClassVar

from competition.settings.base import Settings, setting


class SweepFile(Settings):
    WHAT: ClassVar[str] = "sweep key"

    name: str = setting("sweep", "The sweep's name: its results go to runs/sweeps/<name>/ (default: the file's name).")
    data: str = setting("data/sample", "The competition folder every configuration trains and submits on.")
    off_the_shelf: list[str] = setting([], "Backbones submitted without training, first in the table.")
    grid: dict[str, list[Any]] = setting({}, "Every combination of these lists of training settings.")
    configurations: list[dict[str, Any]] = setting([], "Single configurations, training settings as in train.")
    train: dict[str, Any] = setting({}, "Training settings every configuration shares.")
    augment_target: int = setting(60, "Variants per landmark for any augment recipe.", ge=1, le=100_000)
    submit: list[dict[str, Any]] = setting([{"name": "default"}], "Submit variants: one leaderboard row each.")
    ensemble_top: int = setting(0, "Also submit the ensemble of the N best runs.", ge=0, le=1000)
    runs_dir: str = setting("runs", "Where runs go.")
    submissions_dir: str = setting("submissions", "Where submission files go.")
    leaderboard: str = setting("leaderboard.md", "The leaderboard every row lands in.")
    out: str = setting("", "Folder for results.jsonl, results.md, results.png (default runs/sweeps/<name>).")
