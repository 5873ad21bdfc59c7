"""Global pooling of a feature map into a vector, after cnnimageretrieval-pytorch.

Pure functions first (mac, spoc, gem, rmac), then one tiny module per function, and NetVLAD,
the one pooling with weights of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from competition.errors import CompeteError
from competition.settings.model import ModelSettings


def mac(x: torch.Tensor) -> torch.Tensor:
    """Max over spatial positions (Maximum Activations of Convolutions)."""
    return torch.amax(x, dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Average over spatial positions (Sum-Pooled Convolutional features)."""
    return torch.mean(x, dim=(-2, -1))


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean: p=1 is average, p→∞ is max; p≈3 is the retrieval standard."""
    return torch.mean(x.clamp(min=eps).pow(p), dim=(-2, -1)).pow(1.0 / p)


@lru_cache(maxsize=256)
def rmac_regions(height: int, width: int, levels: int = 3, overlap: float = 0.4) -> tuple:
    """R-MAC's square regions of a height x width map (Tolias et al. 2016): at level l, side
    2 min(h, w) / (l + 1), l regions across the shorter side and as many more across the longer
    one as keep neighbours overlapping by about `overlap`. ((side, (tops, lefts)), ...), a level each."""
    short = min(height, width)
    steps = torch.arange(2, 8, dtype=torch.float64)  # regions the longer side may take at level 1
    offsets = (max(height, width) - short) / (steps - 1)
    more = int(torch.argmin(torch.abs((short**2 - short * offsets) / short**2 - overlap))) + 1
    more_down, more_across = (more if height > width else 0), (more if width > height else 0)
    regions = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        tops, lefts = _region_starts(height, level + more_down, side), _region_starts(width, level + more_across, side)
        regions.append((side, tuple(zip(*[(top, left) for top in tops for left in lefts]))))
    return tuple(regions)


def _region_starts(length: int, count: int, side: int) -> list[int]:
    """Where `count` regions of `side` start along `length`, spread evenly from one end to the other."""
    half = math.floor(side / 2 - 1)
    step = 0.0 if count == 1 else (length - side) / (count - 1)
    return [min(length - side, math.floor(half + i * step) - half) for i in range(count)]


def _unit(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / (x.norm(dim=1, keepdim=True) + eps)


def rmac(x: torch.Tensor, levels: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """Regional MAC: the L2-normalised max of the whole map and of each R-MAC region, summed.
    One sliding max per level, read at the regions' corners: no loop over regions."""
    total = _unit(mac(x), eps)
    for side, (tops, lefts) in rmac_regions(x.shape[-2], x.shape[-1], levels):
        maxima = F.max_pool2d(x, side, stride=1)  # every side x side window's max
        regional = maxima[:, :, list(tops), list(lefts)]  # (batch, channels, regions)
        total = total + _unit(regional, eps).sum(dim=-1)
    return total


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


class RMAC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmac(x.float())  # float32 even under autocast, like GeM: sums of normalised regions


VLAD_CLUSTERS = 8  # a vector is clusters x channels numbers: 10,240 for lite0, before the run's projection


class NetVLAD(nn.Module):
    """NetVLAD (Arandjelovic et al. 2016): each position's L2-normalised descriptor is softly
    assigned to K centres, its residuals to them summed per centre, each centre's sum
    L2-normalised (intra-normalisation) and the K x C whole L2-normalised. The centres start from
    k-means over training photos' descriptors (`fit`, when a full-regime run is prepared) and then
    learn with the backbone: they belong to the run, so an unfitted NetVLAD embeds nothing."""

    def __init__(self, channels: int, clusters: int = VLAD_CLUSTERS):
        super().__init__()
        self.centres = nn.Parameter(torch.zeros(clusters, channels))
        self.assign = nn.Conv2d(channels, clusters, kernel_size=1, bias=False)
        self.register_buffer("fitted", torch.tensor(False))
        self.dim = clusters * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise CompeteError(
                "--pooling vlad: its centres are fitted on the training photos when a full-regime run starts; "
                "train one (--regime full) and submit the run, not the backbone's name"
            )
        with torch.autocast(x.device.type, enabled=False):  # float32 even under autocast: sums of residuals
            x = F.normalize(x.float(), dim=1)
            weights = F.softmax(self.assign(x), dim=1).flatten(2)  # (batch, clusters, positions)
            residuals = weights @ x.flatten(2).transpose(1, 2) - weights.sum(-1, keepdim=True) * self.centres
            return F.normalize(F.normalize(residuals, dim=2).flatten(1), dim=1)

    @torch.no_grad()
    def fit(self, descriptors: np.ndarray, seed: int = 0) -> None:
        """Centres by k-means over L2-normalised local descriptors (n, channels), and the soft
        assignment as NetVLAD starts it: on average a descriptor weighs 100 times more on its
        nearest centre than on the next."""
        import faiss

        clusters = len(self.centres)
        if len(descriptors) < clusters:
            raise CompeteError(f"--pooling vlad: {len(descriptors)} local descriptors for {clusters} centres")
        # a small competition may give few descriptors a centre: said by training, not warned by faiss
        kmeans = faiss.Kmeans(descriptors.shape[1], clusters, niter=25, seed=seed, min_points_per_centroid=1)
        kmeans.train(np.ascontiguousarray(descriptors, np.float32))
        centres = kmeans.centroids
        unit = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        nearest = np.sort(descriptors @ unit.T, axis=1)[:, -2:]
        sharpness = -np.log(0.01) / max(float(np.mean(nearest[:, 1] - nearest[:, 0])), 1e-6)
        self.centres.copy_(torch.from_numpy(centres))
        self.assign.weight.copy_(torch.from_numpy(sharpness * unit)[:, :, None, None])
        self.fitted.fill_(True)

    def extra_repr(self) -> str:
        return f"clusters={len(self.centres)}, fitted={bool(self.fitted)}"


@dataclass(frozen=True)
class PoolingKind:
    """A --pooling choice: its module, built from the model's settings and the feature map's channels."""

    build: Callable[[ModelSettings, int], nn.Module]
    class_token: bool = False  # pools a transformer's class token (as a 1x1 map) instead of its patches


POOLINGS: dict[str, PoolingKind] = {
    "gem": PoolingKind(lambda model, channels: GeM(model.gem_p)),
    "avg": PoolingKind(lambda model, channels: SPoC()),
    "max": PoolingKind(lambda model, channels: MAC()),
    "rmac": PoolingKind(lambda model, channels: RMAC()),
    "cls": PoolingKind(lambda model, channels: SPoC(), class_token=True),  # averaging a 1x1 map: the identity
    "vlad": PoolingKind(lambda model, channels: NetVLAD(channels)),
}


def make_pooling(model: ModelSettings, channels: int) -> nn.Module:
    """The pooling `model` asks for, over a feature map of `channels`."""
    return POOLINGS[model.pooling].build(model, channels)


def learned(pooling: nn.Module) -> bool:
    """Whether a pooling is fitted to a run's photos (it has `fit`: NetVLAD's centres), so its
    output is not the backbone's alone."""
    return callable(getattr(pooling, "fit", None))
