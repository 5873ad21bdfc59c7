"""Experiment tracking beside the leaderboard (`--log-to`): training curves and each submit's
scores sent to TensorBoard, MLflow or Weights & Biases, whichever the user has installed.

The leaderboard stays the local record; a tracker is a second view of the same numbers. Each
backend is a few lines over its library's own API, imported only when asked for.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

from competition.errors import CompeteError

KINDS = ("tensorboard", "mlflow", "wandb")
TRAINING_KEYS = ("loss", "lr", "seconds")  # a history row's other numbers are validation scores


def _module(name: str, kind: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CompeteError(f"--log-to {kind}: {name} is not installed (pip install {kind})") from None


def check_tracker(kind: str) -> None:
    """Asked before any work: a missing tracker library must not cost a finished run its log."""
    if kind and kind not in KINDS:
        raise CompeteError(f"--log-to must be one of {', '.join(KINDS)}, not '{kind}'")
    if kind:
        _module(kind, kind)


def grouped(row: dict) -> dict:
    """A history row as tag groups: train/loss, train/lr, val/<score>; its epoch is the step."""
    return {
        f"{'train' if key in TRAINING_KEYS else 'val'}/{key}": value for key, value in row.items() if key != "epoch"
    }


def numbers(values: dict) -> dict[str, float]:
    """The finite numbers of `values`, named as every backend accepts them (map@10 -> map_at_10)."""
    return {
        str(key).replace("@", "_at_"): float(value)
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


class Tracker:
    """One tracked run: its settings once, then metrics by step."""

    def __init__(self, kind: str, name: str, runs_dir: str | Path, settings: dict):
        self.kind, self.logged = kind, 0
        flat = {key: json.dumps(value) if isinstance(value, (dict, list)) else value for key, value in settings.items()}
        self.hparams = {key: "" if value is None else value for key, value in flat.items()}  # add_hparams takes no None
        if kind == "tensorboard":
            _module("tensorboard", kind)  # torch's writer needs the tensorboard package
            writer = _module("torch.utils.tensorboard", kind).SummaryWriter(str(Path(runs_dir) / "tensorboard" / name))
            writer.add_text("settings", "\n".join(f"    {k}: {v}" for k, v in flat.items()))
            self.backend = writer
        elif kind == "mlflow":
            self.backend = _module("mlflow", kind)
            self.backend.start_run(run_name=name)
            self.backend.log_params({k: str(v)[:500] for k, v in flat.items()})
        elif kind == "wandb":
            self.backend = _module("wandb", kind).init(project="compete", name=name, config=flat, dir=str(runs_dir))
        else:
            check_tracker(kind)

    def metrics(self, values: dict, step: int) -> None:
        values = numbers(values)
        if self.kind == "tensorboard":
            for key, value in values.items():
                self.backend.add_scalar(key, value, step)
        elif self.kind == "mlflow":
            self.backend.log_metrics(values, step=step)
        else:
            self.backend.log(values, step=step)

    def rows(self, history: list[dict]) -> None:
        """The rows of a growing history not sent yet (a training curve, one row per epoch)."""
        for row in history[self.logged :]:
            self.metrics(grouped(row), int(row.get("epoch", self.logged)))
        self.logged = len(history)

    def outcome(self, scores: dict, group: str, step: int = 0) -> None:
        """The scores a run ends with, under `group/`; TensorBoard also pairs them with the
        settings (add_hparams) so runs compare side by side in its HParams tab."""
        scores = {f"{group}/{key}": value for key, value in numbers(scores).items()}
        if self.kind == "tensorboard":
            self.backend.add_hparams(self.hparams, scores, run_name=".", global_step=step)
        else:
            self.metrics(scores, step)

    def close(self) -> None:
        if self.kind == "tensorboard":
            self.backend.close()
        elif self.kind == "mlflow":
            self.backend.end_run()
        else:
            self.backend.finish()


def open_tracker(kind: str, name: str, runs_dir: str | Path, settings: dict) -> Tracker | None:
    """A tracker for `--log-to kind`, None when it is "" (the default: the leaderboard only)."""
    return Tracker(kind, name, runs_dir, settings) if kind else None
