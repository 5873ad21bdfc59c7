"""The retrieval model: backbone feature map -> pooling -> optional projection.

The embedder takes images as float tensors in [0, 1] and normalises them itself with
its backbone's own mean/std, so models with different preprocessing can be mixed in an
ensemble without the caller knowing about it.
"""

from __future__ import annotations

import torch
from torch import nn

from competition.models.pooling import POOLINGS, SPoC, make_pooling
from competition.models.projection import make_projection
from competition.models.registry import (
    FeatureMapBackbone,
    build_classifier,
    get_spec,
    to_feature_backbone,
)
from competition.models.view import model_view
from competition.models.weights import load_pretrained
from competition.settings.model import ModelSettings


class Embedder(nn.Module):
    def __init__(self, backbone: FeatureMapBackbone, pooling: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.feature_dim = getattr(pooling, "dim", backbone.feature_dim)  # NetVLAD: clusters x channels
        self.projection = projection if projection is not None else nn.Identity()
        with torch.no_grad():
            probe = self.projection(torch.ones(1, self.feature_dim))
        self.output_dim = probe.shape[-1]
        inputs = backbone.inputs
        self.register_buffer("mean", torch.tensor(inputs.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(inputs.std).view(1, 3, 1, 1), persistent=False)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (batch, channels, h, w)."""
        return self.backbone((images - self.mean) / self.std)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled backbone feature: what the last-layer regime caches."""
        return self.pooling(self.feature_map(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pooled(images))


def build_embedder(model: ModelSettings, projection: str = "none") -> tuple[Embedder, str]:
    """The embedder (with `projection` after its pooling: none, linear to model.embedding_dim, or
    whitening) and where its backbone weights came from ("random" if not pretrained)."""
    spec = get_spec(model.backbone)
    # an aspect view batches photos of any shape: the backbone is built to take them
    aspect = model_view(model).resize == "aspect"
    classifier = build_classifier(spec, model.image_size, any_shape=aspect)
    origin = load_pretrained(spec, classifier, model.weights_file or None) if model.pretrained else "random"
    backbone = to_feature_backbone(spec, classifier, class_token=POOLINGS[model.pooling].class_token)
    dim = model.embedding_dim if projection == "linear" else 0
    # A tower that pools itself gives signed vectors: GeM's clamp would destroy them.
    pooling = SPoC() if backbone.pools_itself else make_pooling(model, backbone.feature_dim)
    projection_layer = make_projection(projection, getattr(pooling, "dim", backbone.feature_dim), dim)
    return Embedder(backbone, pooling, projection_layer), origin
