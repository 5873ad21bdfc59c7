"""What turns a pooled backbone feature into the embedding: nothing, a learned linear
projection (trained with a loss), or a learned whitening (fitted in closed form).

Learned whitening (Radenović et al., "Fine-tuning CNN image retrieval with no human
annotation", after Mikolajczyk & Matas 2007): centre the L2-normalised features and
multiply by the inverse square root of the within-landmark covariance. Directions in
which photos of one landmark vary (light, viewpoint, season) are shrunk, the rest kept.
Those nuisance directions are shared by all landmarks, which is why it carries over to
landmarks the training folder never shows, where a trained projection over-fits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PROJECTIONS = ("none", "linear", "whitening")


class LearnedWhitening(nn.Module):
    """x -> (normalise(x) - mean) @ matrix; the buffers come from `train.whitening.fit_learned_whitening`."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim, out_dim or dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (F.normalize(features.float(), dim=-1) - self.mean) @ self.matrix

    def set(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.matrix.copy_(torch.as_tensor(matrix, dtype=torch.float32))


def make_projection(kind: str, feature_dim: int, embedding_dim: int = 0) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(feature_dim, embedding_dim or feature_dim)
    if kind == "whitening":
        return LearnedWhitening(feature_dim, embedding_dim or feature_dim)
    raise ValueError(f"unknown projection '{kind}': choose from {PROJECTIONS}")
