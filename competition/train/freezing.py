"""Which backbone weights train in the full regime, and BatchNorm's mode."""

from __future__ import annotations

import logging

import torch
from torch import nn

from competition.errors import CompeteError

log = logging.getLogger(__name__)

_WRAPPERS = ("body.model.", "body.")  # how our backbones wrap timm / torchvision models


def user_facing_name(name: str) -> str:
    """'body.model.blocks.5.0.conv' -> 'blocks.5.0.conv': parameter names as in the original model."""
    for prefix in _WRAPPERS:
        name = name.removeprefix(prefix)
    return name


def layer_names(backbone: nn.Module, depth: int = 2) -> list[str]:
    """Names a user can pass to --unfreeze-from: modules with weights, up to `depth` levels down."""
    names = []
    for name, module in backbone.named_modules():
        name = user_facing_name(name)
        if name and name.count(".") < depth and any(True for _ in module.parameters()) and name not in names:
            names.append(name)
    return [n for n in names if n not in ("body", "model")]


def freeze_before(backbone: nn.Module, layer: str) -> int:
    """Freeze every parameter before the first one inside `layer`; returns how many were frozen."""
    parameters = list(backbone.named_parameters())
    starts = [i for i, (name, _) in enumerate(parameters) if f".{layer}." in f".{name}."]
    if not starts:
        shown = ", ".join(layer_names(backbone)[:40])
        raise CompeteError(f"--unfreeze-from {layer}: no such layer in this backbone; layers: {shown}")
    for _, parameter in parameters[: starts[0]]:
        parameter.requires_grad_(False)
    return starts[0]


def full_training_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Everything trains, except BatchNorm statistics when `freeze_bn` or its layer is frozen."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen_layer = module.weight is not None and not module.weight.requires_grad
            if freeze_bn or frozen_layer:
                module.eval()


def freeze_unused(embedder: nn.Module, size: int = 64) -> list[str]:
    """Freeze the trainable weights the embedding never reaches, found by one backward pass on a
    small batch; returns their names. timm's reset_classifier(0) leaves a classifier's own layers
    (ConvNeXt's head.norm, MobileNetV3's conv_head) that forward_features skips: DDP fails at its
    second step on a trainable weight that never gets a gradient."""
    training = embedder.training
    embedder.eval()  # BatchNorm's statistics untouched by the probe
    device = next(embedder.parameters()).device
    probe = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        embedder(probe).float().sum().backward()
        unused = [(name, p) for name, p in embedder.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        embedder.zero_grad(set_to_none=True)
        embedder.train(training)
    for _, parameter in unused:
        parameter.requires_grad_(False)
    if unused:
        log.info("frozen, unused by the embedding: %s", ", ".join(user_facing_name(name) for name, _ in unused))
    return [name for name, _ in unused]
