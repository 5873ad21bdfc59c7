"""The model, declared once: what a run embeds with (backbone, pooling, projection size, input
size, weights) and the view a photo is embedded at.

Training nests `ModelSettings` (its flags flat, in the Model panel), best.pt stores it, submit's
off-the-shelf backbones take the part of it that applies to them (`OffTheShelf`), models/view.py
resolves a `View` from it, and runs.py keys the features cache by both. A new model setting is
declared here and used where it acts (models/embedder.py); its cache key follows by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import model_validator

from competition.settings.base import Settings, setting
from competition.settings.choices import Pooling, Resize

DEFAULT_BACKBONE = "efficientnet_lite0"


class ModelSettings(Settings):
    WHAT: ClassVar[str] = "model setting"
    PANEL: ClassVar[str] = "Model"
    # Settings the features-cache file already spells, or holds resolved: every other one is
    # fingerprinted into its name (features_identity), so a new setting never reuses stale vectors.
    KEYED_ELSEWHERE: ClassVar[frozenset[str]] = frozenset(
        {"backbone", "pooling", "gem_p", "image_size", "resize", "pretrained", "weights_file"}
    )
    AFTER_POOLING: ClassVar[frozenset[str]] = frozenset({"embedding_dim"})  # the pooled features ignore it

    backbone: str = setting(
        DEFAULT_BACKBONE,
        "Backbone (repeat to train several for an ensemble); `compete models` lists them.",
        many=True,
        metavar="NAME",
        complete="backbones",
    )
    pooling: Pooling = setting(
        "gem",
        "How the feature map becomes one vector: gem is the retrieval standard; rmac: regional max (R-MAC); cls: a "
        "transformer's class token; vlad: NetVLAD, centres from k-means on the training photos, learned in the full "
        "regime.",
    )
    # float32 overflows past p of about 50 on lite0's maps, and p = 20 already ranks as max pooling
    gem_p: float = setting(3.0, "GeM pooling's exponent (1: average, up to 20; --pooling max beyond).", gt=0, le=20)
    embedding_dim: int = setting(512, "Projection size of loss heads; 0 = pooled backbone feature.", ge=0, le=8192)
    image_size: int = setting(
        0,
        "Embedding view size in pixels: the longer side for --resize aspect, the square's side for square "
        "(0: the backbone's own, lite0: 384 aspect / 224 square); the full regime's training crops.",
        ge=0,
        le=4096,
    )
    resize: Resize = setting(
        "aspect",
        "aspect: photos embedded at their own aspect ratio (never enlarged past their size); square: squashed "
        "to a square. Submit uses the run's own.",
    )
    pretrained: bool = setting(True, "ImageNet weights (--no-pretrained: random init, for tests and research).")
    weights_file: str = setting(
        "", "ImageNet weights file for the backbone (.pth, .safetensors).", old_flags=("--weights",), path="file"
    )

    @model_validator(mode="after")
    def _a_real_size(self) -> ModelSettings:
        if 0 < self.image_size < 32:
            raise ValueError(f"--image-size must be 0 (the backbone's own) or at least 32, not {self.image_size}")
        return self

    def features_identity(self) -> list[str]:
        """What else shapes the pooled features than the cache's name says (empty today)."""
        skip = self.KEYED_ELSEWHERE | self.AFTER_POOLING
        return [f"{name}={value}" for name, value in self if name not in skip]


class OffTheShelf(ModelSettings):
    """Submit's backbones named by --model: pooled as these say; the backbone comes from --model,
    the view from submit's own --image-size/--resize (which apply to runs too)."""

    PANEL: ClassVar[str] = "Off-the-shelf backbones"
    HIDDEN: ClassVar[frozenset[str]] = frozenset({"backbone", "embedding_dim", "pretrained", "image_size", "resize"})


@dataclass(frozen=True)
class View:
    """How photos are embedded: the size and resize of the photo, test-time views (mirror,
    scales) and the half-precision type of a CUDA device ("" = float32). Made by
    models/view.py from a model and submit's overrides; its `tag` names the caches."""

    size: int
    resize: str  # aspect | square
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    half: str = ""  # bfloat16 | float16 on CUDA under --precision

    @property
    def passes(self) -> int:
        """Forward passes a photo takes: one per scale, twice when mirrored too."""
        return len(self.scales) * (2 if self.flip else 1)

    @property
    def several(self) -> bool:
        return self.passes > 1

    @property
    def tag(self) -> str:
        """The view as a cache's file name spells it."""
        return (
            f"{self.size}"
            + ("-aspect" if self.resize == "aspect" else "")
            + ("-flip" if self.flip else "")
            + ("" if list(self.scales) == [1.0] else "-x" + "_".join(f"{s:g}" for s in self.scales))
        )

    @property
    def key(self) -> str:
        """What a cached vector's key adds to its file's: a store reused at another view misses."""
        return (
            f"|{self.tag}"
            + ("|mean-length" if self.several else "")  # views averaged at their length (before: unit length)
            + (f"|{self.half}" if self.half else "")  # half-precision vectors differ a little from float32 ones
        )
