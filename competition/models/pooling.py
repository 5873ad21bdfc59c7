"""Global pooling of a feature map into a vector, after cnnimageretrieval-pytorch.

Pure functions first (mac, spoc, gem), then one tiny module per function.
"""

from __future__ import annotations

import torch
from torch import nn


def mac(x: torch.Tensor) -> torch.Tensor:
    """Max over spatial positions (Maximum Activations of Convolutions)."""
    return torch.amax(x, dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Average over spatial positions (Sum-Pooled Convolutional features)."""
    return torch.mean(x, dim=(-2, -1))


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean: p=1 is average, p→∞ is max; p≈3 is the retrieval standard."""
    return torch.mean(x.clamp(min=eps).pow(p), dim=(-2, -1)).pow(1.0 / p)


class MAC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mac(x)


class SPoC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spoc(x)


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, learn_p: bool = True, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: pow() of small activations underflows in fp16.
        return gem(x.float(), self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}"


# "cls": the backbone hands over a transformer's class token as a 1x1 map; averaging it is the identity.
POOLINGS = {"avg": SPoC, "max": MAC, "gem": GeM, "cls": SPoC}


def make_pooling(name: str, gem_p: float = 3.0) -> nn.Module:
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling '{name}': choose from {sorted(POOLINGS)}")
    return GeM(gem_p) if name == "gem" else POOLINGS[name]()
