"""A run's folder: config.json, metrics.csv + curves.png, best.pt, last.pt, summary.json.

Every file is written atomically, so an interrupted run leaves the previous version of
each file, never half of one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from competition.io import atomic_write_json, atomic_write_text
from competition.models.checkpoint import load_checkpoint, save_checkpoint
from competition.report.plots import plot_training_curves
from competition.runs import BEST, CURVES, LAST, METRICS, is_run
from competition.tracking import Tracker


class RunFolder:
    def __init__(self, path: str | Path, tracker: Tracker | None = None):
        self.path = Path(path)
        self.tracker = tracker  # --log-to: each new history row is sent there too

    @property
    def holds_checkpoint(self) -> bool:
        """A best.pt is here (finished or not; runs.is_finished says finished)."""
        return is_run(self.path)

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_json(self.path / name, data)

    def write_history(self, history: list[dict], baseline: dict) -> None:
        """metrics.csv, and curves.png when the run has epochs to draw."""
        if self.tracker is not None:
            self.tracker.rows(history)
        metrics = pd.DataFrame(history)
        atomic_write_text(self.path / METRICS, metrics.to_csv(index=False))
        if "loss" in metrics and len(metrics):
            plot_training_curves(metrics, baseline, self.path / CURVES)

    def save_best(self, payload: dict) -> None:
        save_checkpoint(self.path / BEST, payload)

    def save_last(self, payload: dict) -> None:
        save_checkpoint(self.path / LAST, payload)

    def load_best(self) -> dict:
        return load_checkpoint(self.path / BEST)

    def load_last(self) -> dict | None:
        return load_checkpoint(self.path / LAST) if (self.path / LAST).exists() else None
