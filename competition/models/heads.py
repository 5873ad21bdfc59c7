"""Classification heads that train an embedding: plain softmax, and margin heads.

Each head maps (embedding, labels) to logits for cross-entropy; the margin heads
(ArcFace, CosFace) work on cosines so the embedding they train is angular, which is
what cosine-similarity retrieval uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embedding)


class MarginHead(nn.Module):
    """Cosine classifier with an additive angular (ArcFace) or cosine (CosFace) margin."""

    def __init__(self, dim: int, num_classes: int, kind: str = "arcface", scale: float = 30.0, margin: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.kind, self.scale, self.margin = kind, scale, margin

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = F.linear(F.normalize(embedding.float()), F.normalize(self.weight))
        if labels is None:  # inference: plain scaled cosines
            return cosine * self.scale
        target = F.one_hot(labels, cosine.shape[1]).bool()
        if self.kind == "arcface":
            theta = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
            # Past pi - m the margin would wrap around and help the wrong class.
            with_margin = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin), cosine - 1.0)
        else:
            with_margin = cosine - self.margin
        return torch.where(target, with_margin, cosine) * self.scale


HEADS = ("softmax", "arcface", "cosface")


def make_head(name: str, dim: int, num_classes: int) -> nn.Module:
    if name == "softmax":
        return SoftmaxHead(dim, num_classes)
    if name in ("arcface", "cosface"):
        return MarginHead(dim, num_classes, kind=name, margin=0.3 if name == "arcface" else 0.2)
    raise ValueError(f"unknown head '{name}': choose from {HEADS}")
