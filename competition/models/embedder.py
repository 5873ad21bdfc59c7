"""The retrieval model: backbone feature map -> pooling -> optional projection.

The embedder takes images as float tensors in [0, 1] and normalises them itself, so
models with different preprocessing can be mixed in an ensemble without the caller
knowing about it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from competition.models.pooling import make_pooling
from competition.models.registry import (DEFAULT_BACKBONE, IMAGENET_MEAN, IMAGENET_STD, build_classifier, get_spec,
                                         to_feature_backbone)
from competition.models.weights import load_pretrained


@dataclass
class EmbedderConfig:
    backbone: str = DEFAULT_BACKBONE
    pooling: str = "gem"  # avg | max | gem
    gem_p: float = 3.0
    embedding_dim: int = 0  # 0: the pooled backbone feature is the embedding
    image_size: int = 224
    pretrained: bool = True
    weights_file: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "EmbedderConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


class Embedder(nn.Module):
    def __init__(self, backbone: nn.Module, pooling: nn.Module, feature_dim: int, embedding_dim: int = 0):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.feature_dim = feature_dim
        self.projection = nn.Linear(feature_dim, embedding_dim) if embedding_dim else nn.Identity()
        self.output_dim = embedding_dim or feature_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled backbone feature: what the last-layer regime caches."""
        return self.pooling(self.backbone((images - self.mean) / self.std)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pooled(images))


def build_embedder(config: EmbedderConfig) -> tuple[Embedder, str]:
    """The embedder and where its backbone weights came from ("random" if not pretrained)."""
    spec = get_spec(config.backbone)
    classifier = build_classifier(spec)
    origin = load_pretrained(spec, classifier, config.weights_file) if config.pretrained else "random"
    backbone = to_feature_backbone(spec, classifier)
    embedder = Embedder(backbone, make_pooling(config.pooling, config.gem_p), backbone.feature_dim, config.embedding_dim)
    return embedder, origin
