"""Keeping a fine-tuned backbone close to its pretrained self, so unseen landmarks do not suffer.

Few photos per class make fine-tuning drift towards features that only separate the
training classes. Each tool here limits that drift in its own way:
- frozen BatchNorm statistics (noisy batch statistics are the first thing to go wrong);
- layer-wise learning-rate decay (early, generic layers move least);
- L2-SP: a penalty on the distance from the pretrained weights, instead of weight decay
  towards zero (Li et al. 2018);
- WiSE-FT: interpolate pretrained and fine-tuned weights, alpha chosen on held-out
  classes (Wortsman et al. 2022).
"""

from __future__ import annotations

import torch
from torch import nn

from competition.train.freezing import user_facing_name

FEW_PHOTOS = 30  # per class; below this, batch statistics of a fine-tuning batch are not trusted


def resolve_freeze_bn(setting: bool | str, photos_per_class: dict[str, int]) -> bool:
    """'auto': freeze BatchNorm when the smallest class has fewer than FEW_PHOTOS photos."""
    if setting == "auto":
        return min(photos_per_class.values(), default=0) < FEW_PHOTOS
    return bool(setting)


def _unit(name: str) -> str:
    """The block a parameter belongs to: 'blocks.3', 'layer2.1', 'conv_stem', ..."""
    parts = user_facing_name(name).split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def layer_decay_groups(backbone: nn.Module, lr: float, decay: float) -> list[dict]:
    """Optimizer groups, one per block in forward order: the last block gets `lr`, each
    earlier one `decay` times the next. Frozen parameters are left out."""
    units: dict[str, list[nn.Parameter]] = {}
    for name, parameter in backbone.named_parameters():
        if parameter.requires_grad:
            units.setdefault(_unit(name), []).append(parameter)
    count = len(units)
    return [
        {"params": params, "lr": lr * decay ** (count - 1 - depth), "block": unit}
        for depth, (unit, params) in enumerate(units.items())
    ]


class L2SP:
    """alpha/2 * sum ||w - w_pretrained||^2 over the trainable backbone weights."""

    def __init__(self, backbone: nn.Module, alpha: float):
        self.alpha = alpha
        self.pairs = [(p, p.detach().clone()) for p in backbone.parameters() if p.requires_grad]

    def __call__(self) -> torch.Tensor:
        return 0.5 * self.alpha * sum(((p - start) ** 2).sum() for p, start in self.pairs)


def cpu_copy(state: dict) -> dict:
    """A snapshot of weights to interpolate towards later, kept off the accelerator."""
    return {key: value.detach().cpu().clone() for key, value in state.items()}


def interpolate_weights(pretrained: dict, finetuned: dict, alpha: float) -> dict:
    """(1 - alpha) * start + alpha * finetuned for every floating tensor of the same shape in
    both (counters come from the fine-tuned model). The start's projection is its random
    initialisation, which roughly preserves cosines, so alpha=0 scores like the backbone."""
    mixed = {}
    for key, value in finetuned.items():
        start = pretrained.get(key)
        if start is not None and value.is_floating_point() and start.shape == value.shape:
            mixed[key] = torch.lerp(start.to(value.dtype), value, alpha)
        else:
            mixed[key] = value
    return mixed
