"""Backbones by name, the way timm does it: a name maps to a builder and a few facts.

Every backbone is built to return a feature map (B, C, H, W); pooling and projection
happen in the embedder so that any backbone can be paired with any pooling. Models
that return something else are brought to that form here: channels-last maps (Swin)
are permuted, and transformer token sequences (ViT, DeiT...) become a map of their
patch tokens, or the class token alone as a 1x1 map for `--pooling cls`. Each backbone
also carries the input size and mean/std its pretrained weights expect.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from competition.errors import CompeteError
from competition.models.catalog import OPEN_CLIP, REGISTRY, BackboneSpec, open_clip_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_spec(name: str) -> BackboneSpec:
    """The registered spec, or one made on the fly for any other timm model name or an
    open_clip image tower."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith(OPEN_CLIP):
        return BackboneSpec(name, "open_clip", feature_dim=0, note="open_clip image tower")
    if timm.is_model(name):
        published = timm.get_pretrained_cfg(name)
        hub_id = published.hf_hub_id if published is not None and published.hf_hub_id else ""
        return BackboneSpec(name, "timm", feature_dim=0, note="any timm model", weights_at=hub_id)
    known = ", ".join(sorted(REGISTRY))
    nearest = difflib.get_close_matches(name, list(dict.fromkeys([*REGISTRY, *timm.list_models()])), n=3, cutoff=0.75)
    guess = f" (did you mean {' or '.join(repr(n) for n in nearest)}?)" if nearest else ""
    raise CompeteError(
        f"unknown backbone '{name}'{guess}: use one of {known}, any timm model name, or "
        f"{OPEN_CLIP}<architecture>/<pretrained tag>"
    )


def open_clip_module():
    try:
        import open_clip
    except ImportError as error:
        raise CompeteError(
            f"open_clip backbones need the open_clip_torch package ({error}): pip install open_clip_torch"
        ) from error
    return open_clip


@dataclass(frozen=True)
class InputConfig:
    """What the pretrained weights were trained on: square input size and normalisation."""

    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fixed_size: bool = False  # made for one input size (ViT, Swin, CLIP towers): square views only


class FeatureMapBackbone(nn.Module):
    """Wraps a classifier so forward() returns its last feature map (B, C, H, W).

    `pools_itself`: the model already gives one vector per image (an open_clip image
    tower), handed over as a 1x1 map; the embedder then averages, which keeps it as is."""

    def __init__(
        self, body: nn.Module, feature_dim: int, inputs: InputConfig = InputConfig(), pools_itself: bool = False
    ):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.inputs = inputs
        self.pools_itself = pools_itself

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.body(images)
        return out["features"] if isinstance(out, dict) else out


def tokens_to_map(tokens: torch.Tensor, prefix_tokens: int, class_token: bool = False) -> torch.Tensor:
    """(B, N, C) transformer tokens -> (B, C, h, w): the patch grid, or the class token as 1x1."""
    if class_token:
        if prefix_tokens < 1:
            raise CompeteError("--pooling cls needs a model with a class token (ViT, DeiT, ...)")
        return tokens[:, 0, :, None, None]
    patches = tokens[:, prefix_tokens:]
    side = int(round(patches.shape[1] ** 0.5))
    grid = (side, side) if side * side == patches.shape[1] else (1, patches.shape[1])
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module, class_token: bool = False):
        super().__init__()
        self.model = model
        self.class_token = class_token
        self.channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(images)
        if out.ndim == 3:
            return tokens_to_map(out, getattr(self.model, "num_prefix_tokens", 0), self.class_token)
        if self.class_token:
            raise CompeteError("--pooling cls needs a transformer backbone; this one gives a feature map")
        return out.permute(0, 3, 1, 2) if self.channels_last else out


class _VectorTower(nn.Module):
    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower(images)[:, :, None, None]


def native_inputs(spec: BackboneSpec) -> InputConfig:
    """The input size and normalisation of the backbone's pretrained weights."""
    if spec.source == "open_clip":
        open_clip = open_clip_module()
        architecture, tag = open_clip_names(spec)
        pretrained = open_clip.get_pretrained_cfg(architecture, tag) if tag else {}
        vision = open_clip.get_model_config(architecture)["vision_cfg"]
        size = vision.get("image_size", 224)
        return InputConfig(
            size if isinstance(size, int) else size[0],
            tuple(pretrained.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            tuple(pretrained.get("std", open_clip.OPENAI_DATASET_STD)),
            fixed_size=True,
        )
    if spec.source != "timm":
        return InputConfig()
    cfg = timm.get_pretrained_cfg(spec.name)
    if cfg is None:
        return InputConfig()
    cfg = cfg.to_dict()
    return InputConfig(
        int(cfg.get("input_size", (3, 224, 224))[-1]),
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
        fixed_size=bool(cfg.get("fixed_input_size", False)),
    )


def build_classifier(spec: BackboneSpec, image_size: int = 0, any_shape: bool = False) -> nn.Module:
    """The randomly initialised ImageNet classifier whose weights files we can load.

    Transformers are built for any input size when `image_size` differs from their native
    size or `any_shape` asks for photos at their own aspect ratio (timm interpolates their
    position embeddings)."""
    if spec.source == "timm":
        native = native_inputs(spec).size
        if any_shape or (image_size and image_size != native):
            try:
                return timm.create_model(spec.name, pretrained=False, dynamic_img_size=True)
            except TypeError:  # CNNs take any size and have no such argument
                pass
        return timm.create_model(spec.name, pretrained=False)
    if spec.source == "open_clip":
        return open_clip_module().create_model(open_clip_names(spec)[0], pretrained=None)
    if spec.name == "googlenet":
        # transform_input=True is how the ImageNet weights were trained.
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    return torchvision.models.get_model(spec.name, weights=None)


def to_feature_backbone(spec: BackboneSpec, classifier: nn.Module, class_token: bool = False) -> FeatureMapBackbone:
    if spec.source == "timm":
        classifier.reset_classifier(0)  # unused by forward_features; would only sit in checkpoints and DDP
        return FeatureMapBackbone(_TimmFeatures(classifier, class_token), classifier.num_features, native_inputs(spec))
    if spec.source == "open_clip":
        return FeatureMapBackbone(
            _VectorTower(classifier.visual), classifier.visual.output_dim, native_inputs(spec), pools_itself=True
        )
    if class_token:
        raise CompeteError(f"--pooling cls needs a transformer backbone; {spec.name} gives a feature map")
    body = create_feature_extractor(classifier, return_nodes={spec.feature_node: "features"})
    return FeatureMapBackbone(body, spec.feature_dim)
