"""What embedding photos takes, shared by `compete submit` and `compete features`: the models,
their views (test-time flips and scales, size overrides), the competition folder and the
machine. Each command's settings extend it with their own."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from competition.settings.base import Settings, setting
from competition.settings.choices import Precision
from competition.settings.model import ModelSettings, OffTheShelf
from competition.settings.train import DATA_HELP, DEVICE_HELP, PRECISION_HELP, WORKERS_HELP

MAX_VIEWS = 5  # test-time scales per photo


def models_setting(help: str):
    """--model/-m as submit and features take it (each says what it does with it)."""
    return setting(["efficientnet_lite0"], help, flags=("--model", "-m"), metavar="RUN", complete="runs")


class EmbeddingConfig(Settings):
    """The models and how their photos are embedded; not a command's settings on its own."""

    WHAT: ClassVar[str] = "setting"
    data: str = setting("data/sample", DATA_HELP, flags=("--data", "-d"), path="dir")
    model: list[str] = models_setting(
        "Run folder/name, or a backbone name for off-the-shelf features; repeat for an ensemble."
    )
    # Mirrored photo averaged in: measured on real photos (realdev), mAP@10 +2 points off the
    # shelf and in held-out validation, for twice the embedding time.
    flip: bool = setting(
        True, "Test-time augmentation: average with the mirrored photo (measured on real photos: +2 points mAP@10)."
    )
    scales: list[float] = setting(
        [1.0],
        "Test-time scales, e.g. 0.707,1,1.414: the photo is resized to each from its own pixels (at most 5, "
        "at most 1024 px).",
    )
    image_size: int = setting(0, "Override every model's view size (0: its own).", ge=0, le=2048)
    resize: Literal["", "aspect", "square"] = setting(
        "",
        "Override every model's view: square (the whole photo squashed to size x size) or aspect (longer side "
        "to size, aspect ratio kept, photos of one shape batched together).",
        show_default="each model's own (aspect for off-the-shelf backbones)",
    )
    off_the_shelf: OffTheShelf = OffTheShelf()  # --pooling, --gem-p, --weights-file of backbones named by --model
    runs_dir: str = setting("runs", "Where runs and embedding caches live.", path="dir")
    batch_size: int = setting(
        32, "Photos per forward pass on CUDA (a CPU takes fewer, about 8 of 224 px: faster there).", ge=1, le=4096
    )
    device: str = setting("", DEVICE_HELP, metavar="DEVICE")
    workers: int = setting(-1, WORKERS_HELP, ge=-1, le=64)
    strict: bool = setting(False, "Fail on an unreadable query/gallery image instead of warning.")
    precision: Precision = setting("auto", PRECISION_HELP)
    compile: bool = setting(False, "torch.compile the models on CUDA (minutes to compile, faster after); no-op on CPU.")

    @model_validator(mode="before")
    @classmethod
    def _one_model_as_a_list(cls, data: dict) -> dict:
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = data | {"model": [data["model"]]}
        return data

    @model_validator(mode="after")
    def _embeddable(self) -> EmbeddingConfig:
        if not self.model:
            raise ValueError("no model given: a run folder/name or a backbone name (--model)")
        if 0 < self.image_size < 32:
            raise ValueError(f"--image-size must be 0 (each model's own) or at least 32, not {self.image_size}")
        if not self.scales or len(self.scales) > MAX_VIEWS or min(self.scales) <= 0:
            raise ValueError(f"--scales must be 1 to {MAX_VIEWS} positive numbers, not {self.scales}")
        return self

    def off_the_shelf_model(self, backbone: str) -> ModelSettings:
        """The model of a backbone named by --model: pretrained, pooled as --pooling and --gem-p say."""
        return ModelSettings.from_dict(self.off_the_shelf.to_dict() | {"backbone": backbone})
