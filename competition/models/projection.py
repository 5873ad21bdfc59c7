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

import numpy as np
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


PROJECT_ROWS = 65_536  # rows a block: 335 MB of 1280-d float32 on the device at once, whatever the gallery


def project_rows(projection: nn.Module, vectors: np.ndarray, device: torch.device, block: int = PROJECT_ROWS):
    """`projection` of every row, a block of rows on the device at a time into one float32 result:
    a 760k-photo gallery projected whole would hold 3-4 copies of 4 GB on a 16 GB card."""
    out = None
    with torch.no_grad():
        for start in range(0, len(vectors), block):
            rows = torch.from_numpy(np.ascontiguousarray(vectors[start : start + block], np.float32)).to(device)
            done = projection(rows).float().cpu().numpy()
            if out is None:
                out = np.empty((len(vectors), done.shape[1]), np.float32)
            out[start : start + len(done)] = done
    if out is None:  # no rows: the projection's width from one
        with torch.no_grad():
            width = projection(torch.zeros(1, vectors.shape[1], device=device)).shape[1]
        out = np.empty((0, width), np.float32)
    return out
