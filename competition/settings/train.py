"""Everything that defines a training run: `compete train`'s flags, a config file's keys, a
sweep's `train:` entries, and the run's own config.json."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import model_validator

from competition.settings.base import Settings, setting
from competition.settings.choices import LEARNED_POOLINGS, Head, Landmarks, LogTo, Precision, Regime, TripletMining
from competition.settings.model import ModelSettings

# Flags of the place and the machine: a resumed run may take new values of these.
RESUME_MAY_CHANGE = ("epochs", "patience", "device", "workers", "log_to")

LANDMARKS_HELP = (
    "Are the queries' landmarks those of train/? known: all are (closed set; class posteriors fused into the "
    "ranking); new: none is (labels never used); mixed: some are; auto: estimated from the queries."
)
PRECISION_HELP = (
    "CUDA mixed precision: auto (bf16 on compute capability 8.0 on: A100, H100, L4; fp16 with a loss scaler on "
    "older cards: T4, P100, V100), fp32, bf16 or fp16. A CPU computes in float32 whatever this says."
)
DEVICE_HELP = "cpu, cuda or cuda:1 ('' = CUDA when present)."
LOG_TO_HELP = (
    "tensorboard (runs/tensorboard/<name>), mlflow or wandb, whichever is installed; the leaderboard stays the "
    "local record."
)
WORKERS_HELP = "Image-loading processes: 0 loads in the main process, -1 picks from the cores and device."
DATA_HELP = "Competition folder: train/<class>/*, query/*, gallery/*, optional labels.csv (see the README)."


TRAIN_PANELS = {  # `--help` panel -> its settings
    "Model": ("regime", "head", "whiten_power"),  # after the model's own (settings/model.py)
    "Data": (
        "data", "augmented", "use_augmented", "landmarks", "photos_per_landmark", "pseudo_labels", "pseudo_precision",
        "strict",
    ),
    "Training": (
        "epochs", "lr", "backbone_lr_scale", "batch_size", "weight_decay", "label_smoothing", "warmup_epochs",
        "grad_clip", "triplet_margin", "triplet_mining", "contrastive_margin", "samples_per_class", "unfreeze_from",
        "freeze_bn", "layer_decay", "l2_sp", "seed",
    ),
    "Validation": ("folds", "holdout_photos", "patience", "wise_ft"),
    "Output": ("run_name", "runs_dir", "log_to"),
    "Machine": ("device", "workers", "precision", "compile"),
}  # fmt: skip


class TrainConfig(Settings):
    WHAT: ClassVar[str] = "training setting"
    # What a run adds to its config.json beside the settings: a run's config.json can be fed back.
    RECORD_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"head_resolved", "weights_origin", "pseudo_labels_added", "classes", "provenance", "freeze_bn_resolved"}
    )

    PANELS: ClassVar[dict[str, tuple[str, ...]]] = TRAIN_PANELS
    model: ModelSettings = ModelSettings()
    data: str = setting("data/sample", DATA_HELP, flags=("--data", "-d"), path="dir")
    regime: Regime = setting("last", "last: frozen backbone, cached features, head only; full: all layers.")
    run_name: str = setting(
        "",
        "Run name under runs/ (default <backbone>-<regime>-<time>).",
        flags=("--name",),
        aliases=("--run-name",),
        metavar="NAME",
    )
    runs_dir: str = setting("runs", "Where run folders go.", path="dir")
    epochs: int = setting(30, "Loss heads and the full regime: epochs (validation picks the best).", ge=1, le=10_000)
    head: Head = setting(
        "auto",
        "auto: learned whitening in the last regime, softmax in the full. whitening: learned whitening fitted "
        "in closed form on the training photos' labels (last regime); softmax, arcface, cosface, "
        "subcenter-arcface (classifier heads), triplet (hard-negative mining) or contrastive (Siamese pairs), "
        "the last two without a classifier: trained with that loss.",
    )
    whiten_power: float = setting(
        0.5, "Learned whitening strength: 1 full, 0.5 square-root (milder, for small training sets).", gt=0, le=2
    )
    landmarks: Landmarks = setting("auto", LANDMARKS_HELP)
    folds: int = setting(
        4,
        "Validation folds, each holding out 1/folds of the landmarks whole (the full regime validates on the first).",
        ge=1,
        le=100,
    )
    holdout_photos: float = setting(
        0.25, "Share of each other landmark's photos held out for validation (at least 2).", gt=0, lt=1
    )
    lr: float = setting(1e-3, "Learning rate of the head (the backbone's is lower).", gt=0, le=10)
    backbone_lr_scale: float = setting(
        0.1, "Full regime: the backbone's learning rate is --lr times this.", gt=0, le=10
    )
    batch_size: int = setting(
        64, "Training batch, per process under torchrun (a CPU embeds in smaller batches).", ge=1, le=4096
    )
    weight_decay: float = setting(1e-4, "AdamW weight decay.", ge=0, le=10)
    label_smoothing: float = setting(0.1, "Classifier heads: label smoothing.", ge=0, le=0.99)
    warmup_epochs: int = setting(1, "Epochs of linear learning-rate warm-up.", ge=0, le=10_000)
    grad_clip: float = setting(1.0, "Gradient norm clipping.", gt=0, le=1e6)
    patience: int = setting(8, "Stop after this many epochs without a better validation score.", ge=1, le=10_000)
    triplet_margin: float = setting(0.1, "Triplet loss margin.", gt=0, le=2)
    triplet_mining: TripletMining = setting("semihard", "Triplet negatives: hard, semihard, or all inside the margin.")
    # cnnimageretrieval-pytorch's default for its contrastive loss on unit vectors
    contrastive_margin: float = setting(
        0.7, "Contrastive loss: pairs of other landmarks pushed at least this far apart (unit vectors).", gt=0, le=2
    )
    samples_per_class: int = setting(
        4, "Triplet and contrastive: photos of one landmark side by side in a batch.", ge=2, le=1024
    )
    unfreeze_from: str = setting(
        "",
        "Full regime: freeze the backbone before this layer (e.g. layer4, blocks.5); a wrong name lists them.",
        metavar="LAYER",
    )
    freeze_bn: bool | Literal["auto"] = setting(
        "auto",
        "Full regime: keep BatchNorm statistics pretrained.",
        flags=("--freeze-bn/--train-bn",),
        show_default="auto: when a class has < 30 photos",
    )
    layer_decay: float = setting(
        1.0, "Full regime: each earlier backbone block learns this factor slower (e.g. 0.7; 1 = off).", gt=0, le=1
    )
    l2_sp: float = setting(
        0.0, "Full regime: penalty on the distance from the pretrained weights (e.g. 0.01; 0 = off).", ge=0, le=1e6
    )
    wise_ft: bool = setting(
        True, "Full regime: interpolate pretrained and fine-tuned weights, alpha chosen on held-out landmarks."
    )
    pseudo_labels: bool = setting(
        False,
        "Add classes of query/gallery photos that are confident mutual nearest neighbours (threshold set on "
        "held-out landmarks).",
    )
    pseudo_precision: float = setting(0.9, "Pseudo-labels: the precision their threshold keeps.", ge=0, le=1)
    augmented: str = setting("", "Augmented folder to train on (default <data>/augmented when present).", path="dir")
    use_augmented: bool = setting(
        True, "Train on <data>/augmented when present.", flags=("--use-augmented/--no-augmented",)
    )
    seed: int = setting(0, "Same seed, data and settings: the same run.", ge=0, le=2**32 - 1)
    device: str = setting("", DEVICE_HELP, metavar="DEVICE")
    workers: int = setting(-1, WORKERS_HELP, ge=-1, le=64)
    strict: bool = setting(False, "Stop at an unreadable training photo instead of skipping it.")
    photos_per_landmark: int = setting(
        0,
        "Train and validate on at most N photos of each landmark, a seeded sample (0: all): a Google Landmarks-size "
        "train/ in the hours a Kaggle notebook has.",
        ge=0,
        le=1_000_000,
        metavar="N",
    )
    precision: Precision = setting("auto", PRECISION_HELP)
    log_to: LogTo = setting(
        "", f"Also send the training curves and the final validation to {LOG_TO_HELP}", show_default=False
    )
    compile: bool = setting(
        False, "Full regime: torch.compile the model on CUDA (minutes to compile, faster after); no-op on CPU."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.regime == "full" and self.head_resolved == "whitening":
            raise ValueError(
                "the full regime trains the backbone with a loss: --head softmax, arcface, cosface, "
                "subcenter-arcface, triplet or contrastive (whitening is the last regime's closed-form head)"
            )
        if self.regime == "last" and self.head_resolved != "whitening" and self.model.embedding_dim <= 0:
            raise ValueError("a loss head in the last regime trains a projection: give --embedding-dim > 0")
        if self.model.pooling in LEARNED_POOLINGS and self.regime != "full":
            raise ValueError(f"--pooling {self.model.pooling} is learned with the backbone: it needs --regime full")
        if self.unfreeze_from and self.regime != "full":
            raise ValueError("--unfreeze-from needs --regime full (the last regime freezes the whole backbone)")
        return self

    @property
    def projection(self) -> str:
        """What follows the pooling in the model this run trains (models/projection.py)."""
        if self.head_resolved == "whitening":
            return "whitening"
        return "linear" if self.model.embedding_dim > 0 else "none"

    @property
    def augmented_folder(self) -> Path:
        """The augmented photos this run trains on, when it uses them and they are there."""
        return Path(self.augmented) if self.augmented else Path(self.data) / "augmented"

    @property
    def head_resolved(self) -> str:
        """The head with "auto" resolved for the regime."""
        if self.head == "auto":
            return "whitening" if self.regime == "last" else "softmax"
        return self.head
