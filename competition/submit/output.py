"""Where and how a submission is written: resolved once from submit's settings, so the stages
below ask the format's record (evaluate/formats.py) and never its name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from competition.evaluate.formats import FORMATS, SubmissionFormat
from competition.settings.submit import SubmitConfig


@dataclass(frozen=True)
class Output:
    fmt: SubmissionFormat
    folder: Path
    k: int  # gallery photos per query
    map_k: int  # the mAP@k it is scored at

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{self.fmt.suffix}"


def output_of(config: SubmitConfig) -> Output:
    """-k and --map-k where 0 take the format's default (kaggle: its limit, 100; else 10)."""
    fmt = FORMATS[config.format]
    return Output(fmt, Path(config.submissions_dir), config.k or fmt.default_k, config.map_k or fmt.default_k)
