"""A training run's settings resolved: from flags and a config file, from a run to resume, and
checks of a resumed run's. The settings themselves are declared in settings/train.py."""

from __future__ import annotations

from pathlib import Path

from competition.errors import CompeteError
from competition.models.checkpoint import load_checkpoint
from competition.models.registry import get_spec
from competition.runs import LAST
from competition.settings.files import read_settings_file
from competition.settings.train import RESUME_MAY_CHANGE, TrainConfig


def checked(config: TrainConfig) -> TrainConfig:
    get_spec(config.model.backbone)  # an unknown name fails here, before any data is read
    return config


def training_settings(flags: dict, config_file: str | Path | None = None) -> TrainConfig:
    """A config file's settings (a run's own config.json works), the given flags over them."""
    return checked(TrainConfig.from_dict((read_settings_file(config_file) if config_file else {}) | flags))


def check_same_settings(saved: dict, config: TrainConfig, where: str | Path) -> None:
    """A resumed run's saved settings must equal the current ones, but for RESUME_MAY_CHANGE
    and its place (a moved run continues in its new place)."""
    may_change = (*RESUME_MAY_CHANGE, "run_name", "runs_dir")
    before, now = TrainConfig.from_dict(saved).flat(), config.flat()
    changed = sorted(k for k, v in before.items() if k not in may_change and now[k] != v)
    if changed:
        raise CompeteError(f"{where}: cannot resume with different settings ({', '.join(changed)})")


def resume_settings(run_dir: str | Path, flags: dict) -> TrainConfig:
    """The settings of the run in `run_dir`, which stays where it is (a moved or copied run
    continues in its new place). Flags that would change it are refused, except these:
    RESUME_MAY_CHANGE."""
    run_dir = Path(run_dir)
    if not (run_dir / LAST).is_file():
        raise CompeteError(
            f"{run_dir}: nothing to resume (no {LAST}; the last-layer regime keeps no training state: "
            "it re-runs in seconds from cached features under a new --name)"
        )
    saved = load_checkpoint(run_dir / LAST).get("config")
    if not isinstance(saved, dict):
        raise CompeteError(f"{run_dir / LAST}: holds no training settings")
    place = {"run_name": run_dir.name, "runs_dir": str(run_dir.parent)}
    before = TrainConfig.from_dict(saved).flat() | place
    conflicts = sorted(k for k, v in flags.items() if k not in RESUME_MAY_CHANGE and before.get(k) != v)
    if conflicts:
        raise CompeteError(
            f"--resume continues {run_dir} with its own settings; these flags would change it: "
            f"{', '.join(conflicts)} (train a new run instead)"
        )
    return checked(TrainConfig.from_dict(saved | {k: flags[k] for k in RESUME_MAY_CHANGE if k in flags} | place))
