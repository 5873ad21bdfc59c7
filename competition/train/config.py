"""A training run's settings resolved: from flags and a config file, from a run to resume, and
the embedder they describe. The settings themselves are declared in settings/train.py."""

from __future__ import annotations

from pathlib import Path

from competition.errors import CompeteError
from competition.models.checkpoint import load_checkpoint
from competition.models.embedder import EmbedderConfig
from competition.models.registry import get_spec
from competition.runs import LAST
from competition.settings.base import read_settings_file
from competition.settings.train import RESUME_MAY_CHANGE, TrainConfig


def embedder_config(config: TrainConfig) -> EmbedderConfig:
    """The retrieval model a run trains."""
    projection = "whitening" if config.loss == "whitening" else "linear" if config.embedding_dim > 0 else "none"
    return EmbedderConfig(
        backbone=config.backbone,
        pooling=config.pooling,
        gem_p=config.gem_p,
        projection=projection,
        embedding_dim=config.embedding_dim if projection == "linear" else 0,
        image_size=config.image_size,
        resize=config.resize,
        pretrained=config.pretrained,
        weights_file=config.weights_file or None,
    )


def checked(config: TrainConfig) -> TrainConfig:
    get_spec(config.backbone)  # an unknown name fails here, before any data is read
    return config


def training_settings(flags: dict, config_file: str | Path | None = None) -> TrainConfig:
    """A config file's settings (a run's own config.json works), the given flags over them."""
    return checked(TrainConfig.from_dict((read_settings_file(config_file) if config_file else {}) | flags))


def check_same_settings(saved: dict, config: TrainConfig, where: str | Path) -> None:
    """A resumed run's saved settings must equal the current ones, but for RESUME_MAY_CHANGE
    and its place (a moved run continues in its new place)."""
    may_change = (*RESUME_MAY_CHANGE, "run_name", "runs_dir")
    current = config.to_dict()
    changed = sorted(k for k, v in saved.items() if k not in may_change and k in current and current[k] != v)
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
    conflicts = sorted(k for k, v in flags.items() if k not in RESUME_MAY_CHANGE and place.get(k, saved.get(k)) != v)
    if conflicts:
        raise CompeteError(
            f"--resume continues {run_dir} with its own settings; these flags would change it: "
            f"{', '.join(conflicts)} (train a new run instead)"
        )
    return checked(TrainConfig.from_dict(saved | {k: flags[k] for k in RESUME_MAY_CHANGE if k in flags} | place))
