"""Everything that defines a training run, as one dataclass saved in the run folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from competition.data.dataset import RESIZE_MODES
from competition.errors import CompeteError
from competition.models.embedder import EmbedderConfig
from competition.models.pooling import POOLINGS
from competition.models.registry import DEFAULT_BACKBONE, get_spec
from competition.retrieval.embed import PRECISIONS
from competition.retrieval.landmarks import LANDMARKS
from competition.train.losses import LOSSES, TRIPLET_MINING

REGIMES = ("last", "full")
# What a run adds to its config.json beside the settings: a run's config.json can be fed back.
RUN_RECORD_KEYS = {
    "head_resolved",
    "weights_origin",
    "pseudo_labels_added",
    "classes",
    "provenance",
    "freeze_bn_resolved",
}
# setting: (lowest allowed, whether the lowest itself is allowed, highest or None)
NUMBER_RANGES = {
    "epochs": (1, True, None),
    "batch_size": (1, True, None),
    "lr": (0, False, None),
    "embedding_dim": (0, True, None),
    "image_size": (0, True, 4096),
    "gem_p": (0, False, None),
    "weight_decay": (0, True, None),
    "label_smoothing": (0, True, 0.99),
    "warmup_epochs": (0, True, None),
    "grad_clip": (0, False, None),
    "backbone_lr_scale": (0, False, None),
    "patience": (1, True, None),
    "samples_per_class": (2, True, None),
    "triplet_margin": (0, False, None),
    "pseudo_precision": (0, True, 1),
    "folds": (1, True, None),
    "whiten_power": (0, False, 2),
    "l2_sp": (0, True, None),
    "layer_decay": (0, False, 1),
    "seed": (0, True, None),
    "workers": (-1, True, 64),
}


def check_numbers(config) -> None:
    """Every numeric setting in its range, with one line naming the first that is not."""
    for name, (low, inclusive, high) in NUMBER_RANGES.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CompeteError(f"{name} must be a number, not {value!r}")
        if value < low or (value == low and not inclusive) or (high is not None and value > high):
            bound = f"{'>=' if inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
            raise CompeteError(f"{name} must be {bound}, not {value}")
    if 0 < config.image_size < 32:
        raise CompeteError(f"image_size must be 0 (the backbone's own) or at least 32, not {config.image_size}")


HEAD_CHOICES = ("auto", "whitening", *LOSSES)  # auto: whitening in the last regime, softmax in the full one


@dataclass
class TrainConfig:
    data: str = "data/sample"
    run_name: str = ""  # default: <backbone>-<regime>-<time>
    runs_dir: str = "runs"
    backbone: str = DEFAULT_BACKBONE
    regime: str = "last"  # last: frozen backbone, cached features; full: all layers train
    pooling: str = "gem"
    gem_p: float = 3.0
    embedding_dim: int = 512  # the linear projection that loss heads train
    # whitening: learned whitening fitted in closed form on the training photos (last regime);
    # softmax | arcface | cosface | subcenter-arcface (classifier heads) | triplet (no head): trained with that loss.
    head: str = "auto"
    whiten_power: float = 0.5  # learned whitening: 1 full, 0.5 square-root (milder, for small training sets)
    triplet_margin: float = 0.1
    triplet_mining: str = "semihard"  # hard | semihard | all negatives inside the margin
    samples_per_class: int = 4  # triplet: photos of one class side by side in a batch
    image_size: int = 0  # 0: the backbone's own (square), or its aspect view's longer side (models/embedder.py)
    # aspect: photos embedded at their own aspect ratio (what submit uses too); square: squashed.
    # The full regime trains on square crops of --image-size (0: the backbone's native size).
    resize: str = "aspect"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1  # full regime: backbone lr = lr * this
    unfreeze_from: str = ""  # full regime: layers before this one stay frozen (e.g. layer4, blocks.5)
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 1
    grad_clip: float = 1.0
    # known: every query's landmark is in train/ (validate on its photos, fuse class posteriors at submit);
    # new: none is (labels never reach the ranking); mixed: some are; auto: submit estimates it from the queries.
    landmarks: str = "auto"
    folds: int = 4  # validation folds: each holds out 1/folds of the landmarks whole (the full regime uses one)
    holdout_photos: float = 0.25  # share of each other landmark's photos held out for validation (at least 2)
    augmented: str = ""  # folder from `compete augment`; default <data>/augmented when present
    use_augmented: bool = True
    # Safety for unseen landmarks (full regime), see train/safety.py:
    freeze_bn: bool | str = "auto"  # BatchNorm statistics stay pretrained; auto: when a class has < 30 photos
    layer_decay: float = 1.0  # < 1: each earlier backbone block learns this much slower than the next
    l2_sp: float = 0.0  # > 0: penalise distance from the pretrained weights (replaces backbone weight decay)
    wise_ft: bool = True  # full regime: interpolate towards pretrained, alpha chosen on held-out classes
    pseudo_labels: bool = False  # extra classes from confident mutual neighbours in query + gallery
    pseudo_precision: float = 0.9  # their similarity threshold: this precision on held-out classes
    patience: int = 8
    pretrained: bool = True
    weights_file: str = ""
    seed: int = 0
    device: str = ""  # cpu, cuda, cuda:1, mps; "" = CUDA when present
    workers: int = -1  # image-loading processes; 0: in the main process; -1: by the cores and device
    strict: bool = False  # an unreadable training photo stops the run instead of being skipped
    precision: str = "auto"  # CUDA autocast: auto (bf16 where supported, else fp16), fp32, bf16, fp16; CPU: fp32
    compile: bool = False  # full regime: torch.compile the training model (CUDA; a no-op with a note on CPU)

    @property
    def loss(self) -> str:
        """The head with "auto" resolved for the regime."""
        if self.head == "auto":
            return "whitening" if self.regime == "last" else "softmax"
        return self.head

    def embedder_config(self) -> EmbedderConfig:
        projection = "whitening" if self.loss == "whitening" else "linear" if self.embedding_dim > 0 else "none"
        return EmbedderConfig(
            backbone=self.backbone,
            pooling=self.pooling,
            gem_p=self.gem_p,
            projection=projection,
            embedding_dim=self.embedding_dim if projection == "linear" else 0,
            image_size=self.image_size,
            resize=self.resize,
            pretrained=self.pretrained,
            weights_file=self.weights_file or None,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names - RUN_RECORD_KEYS
        if unknown:
            raise CompeteError(f"unknown training setting(s): {sorted(unknown)}")
        config = cls(**{k: v for k, v in data.items() if k in names})
        check_numbers(config)
        if config.regime not in REGIMES:
            raise CompeteError(f"regime must be one of {REGIMES}, not '{config.regime}'")
        if config.precision not in PRECISIONS:
            raise CompeteError(f"precision must be one of {PRECISIONS}, not '{config.precision}'")
        if config.resize not in RESIZE_MODES:
            raise CompeteError(f"resize must be one of {RESIZE_MODES}, not '{config.resize}'")
        if config.landmarks not in LANDMARKS:
            raise CompeteError(f"landmarks must be one of {LANDMARKS}, not '{config.landmarks}'")
        if config.head not in HEAD_CHOICES:
            raise CompeteError(f"head must be one of {HEAD_CHOICES}, not '{config.head}'")
        if config.regime == "full" and config.loss == "whitening":
            raise CompeteError(
                "the full regime trains the backbone with a loss: --head softmax, arcface, cosface, subcenter-arcface "
                "or triplet (whitening is the last regime's closed-form head)"
            )
        if config.regime == "last" and config.loss != "whitening" and config.embedding_dim <= 0:
            raise CompeteError("a loss head in the last regime trains a projection: give --embedding-dim > 0")
        if not 0 < config.holdout_photos < 1:
            raise CompeteError(f"holdout_photos must be in (0, 1), not {config.holdout_photos}")
        if config.triplet_mining not in TRIPLET_MINING:
            raise CompeteError(f"triplet_mining must be one of {TRIPLET_MINING}, not '{config.triplet_mining}'")
        if config.freeze_bn not in (True, False, "auto"):
            raise CompeteError(f"freeze_bn must be true, false or auto, not '{config.freeze_bn}'")
        if config.unfreeze_from and config.regime != "full":
            raise CompeteError("--unfreeze-from needs --regime full (the last regime freezes the whole backbone)")
        if config.pooling not in POOLINGS:
            raise CompeteError(f"pooling must be one of {sorted(POOLINGS)}, not '{config.pooling}'")
        get_spec(config.backbone)  # an unknown name fails here, before any data is read
        return config


def load_train_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CompeteError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise CompeteError(f"{path}: cannot parse ({str(error).splitlines()[0]})") from error
    if not isinstance(data, dict):
        raise CompeteError(f"{path}: expected a mapping of settings")
    return data


def training_settings(flags: dict, config_file: str | Path | None = None) -> TrainConfig:
    """A config file's settings (a run's own config.json works), the given flags over them."""
    return TrainConfig.from_dict((load_train_config(config_file) if config_file else {}) | flags)


RESUME_MAY_CHANGE = ("epochs", "patience", "device", "workers")


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
    from competition.runs import LAST, load_checkpoint

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
    return TrainConfig.from_dict(saved | {k: flags[k] for k in RESUME_MAY_CHANGE if k in flags} | place)
