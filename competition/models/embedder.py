"""The retrieval model: backbone feature map -> pooling -> optional projection.

The embedder takes images as float tensors in [0, 1] and normalises them itself with
its backbone's own mean/std, so models with different preprocessing can be mixed in an
ensemble without the caller knowing about it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from competition.errors import CompeteError
from competition.models.pooling import make_pooling
from competition.models.projection import make_projection
from competition.models.registry import (
    FeatureMapBackbone,
    build_classifier,
    get_spec,
    native_inputs,
    to_feature_backbone,
)
from competition.models.weights import load_pretrained
from competition.settings.train import DEFAULT_BACKBONE

# The longer side of an aspect-preserving view, as a multiple of the backbone's native square
# side (efficientnet_lite0: 224 -> 384). On realdev-hr's full-size photos, off the shelf and
# learned-whitened, it beat both the native square and 320 px; photos smaller than it are not
# enlarged (data/dataset.py SMALLEST_ASPECT_SIDE), so thumbnails keep their native view.
ASPECT_SIDE_SCALE = 384 / 224


@dataclass
class EmbedderConfig:
    backbone: str = DEFAULT_BACKBONE
    pooling: str = "gem"  # avg | max | gem | cls (transformers: the class token)
    gem_p: float = 3.0
    projection: str = "none"  # none | linear (trained with a loss) | whitening (fitted, see models/projection.py)
    embedding_dim: int = 0  # linear projection size; 0: the pooled feature's size
    image_size: int = 0  # 0: the pretrained weights' size (square), ASPECT_SIDE_SCALE x that (aspect)
    # aspect: the longer side to image_size, the aspect ratio kept (photos of one shape batched);
    # square: the whole photo squashed to image_size x image_size. See ASPECT_SIDE_SCALE.
    resize: str = "aspect"
    pretrained: bool = True
    weights_file: str | None = None

    def __post_init__(self) -> None:
        if self.projection == "none" and self.embedding_dim:  # a size asks for a linear projection (and old runs)
            self.projection = "linear"

    @classmethod
    def from_dict(cls, data: dict) -> "EmbedderConfig":
        """The settings a checkpoint saved; a key this version does not know is refused (a run of a
        newer compete), never dropped."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise CompeteError(f"model settings this compete does not know: {unknown} (a run of a newer version?)")
        # a run saved before `resize` existed was fitted and validated on square views
        return cls(**{"resize": "square"} | data)

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_resize(self) -> str:
        """The view: a backbone made for one input size (timm's fixed_input_size: ViT, Swin...;
        CLIP towers) is always embedded square."""
        return "square" if native_inputs(get_spec(self.backbone)).fixed_size else self.resize

    def resolved_image_size(self) -> int:
        if self.image_size:
            return self.image_size
        native = native_inputs(get_spec(self.backbone)).size
        return native if self.resolved_resize() == "square" else int(round(native * ASPECT_SIDE_SCALE / 32)) * 32


class Embedder(nn.Module):
    def __init__(self, backbone: FeatureMapBackbone, pooling: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.feature_dim = backbone.feature_dim
        self.projection = projection if projection is not None else nn.Identity()
        with torch.no_grad():
            probe = self.projection(torch.ones(1, self.feature_dim))
        self.output_dim = probe.shape[-1]
        inputs = backbone.inputs
        self.register_buffer("mean", torch.tensor(inputs.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(inputs.std).view(1, 3, 1, 1), persistent=False)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled backbone feature: what the last-layer regime caches."""
        return self.pooling(self.backbone((images - self.mean) / self.std)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pooled(images))


def build_embedder(config: EmbedderConfig) -> tuple[Embedder, str]:
    """The embedder and where its backbone weights came from ("random" if not pretrained)."""
    spec = get_spec(config.backbone)
    classifier = build_classifier(spec, config.image_size, any_shape=config.resolved_resize() == "aspect")
    origin = load_pretrained(spec, classifier, config.weights_file) if config.pretrained else "random"
    backbone = to_feature_backbone(spec, classifier, token_output="cls" if config.pooling == "cls" else "patches")
    projection = make_projection(config.projection, backbone.feature_dim, config.embedding_dim)
    # A tower that pools itself gives signed vectors: GeM's clamp would destroy them.
    pooling = make_pooling("avg") if backbone.pools_itself else make_pooling(config.pooling, config.gem_p)
    return Embedder(backbone, pooling, projection), origin
