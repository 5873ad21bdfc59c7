"""Training criteria: (embedding, labels) -> loss, as small interchangeable modules, all here.

Classification losses go through a head (softmax, ArcFace, CosFace: logits for cross-entropy;
the margin heads work on cosines, so the embedding they train is angular, as cosine retrieval
uses it). They are ours rather than pytorch-metric-learning's ArcFaceLoss/CosFaceLoss because
those take no label smoothing, which every classifier head here trains with. Sub-center
ArcFace and the triplet loss are pytorch-metric-learning's (its miner chooses hard negatives
inside each batch; its losses are well tested and fast; we need them, not its trainers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from competition.settings.choices import LOSSES, TRIPLET_MINING


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


class ClassifierLoss(nn.Module):
    """Cross-entropy on a head's logits, with label smoothing."""

    def __init__(self, head: nn.Module, label_smoothing: float = 0.0):
        super().__init__()
        self.head, self.label_smoothing = head, label_smoothing

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(embedding, labels).float(), labels, label_smoothing=self.label_smoothing)


class TripletLoss(nn.Module):
    """Cosine triplet margin loss over the triplets the miner finds in a batch.

    Batches need several photos per class (see `epoch_order`); a batch with no valid
    triplet gives a zero loss that still backpropagates, so training never stalls.
    """

    def __init__(self, margin: float = 0.1, mining: str = "semihard"):
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        if mining not in TRIPLET_MINING:
            raise ValueError(f"unknown triplet mining '{mining}': choose from {TRIPLET_MINING}")
        distance = distances.CosineSimilarity()
        self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=mining, distance=distance)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=distance)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding = embedding.float()
        return self.loss(embedding, labels, self.miner(embedding, labels))


class ContrastiveLoss(nn.Module):
    """The Siamese loss of landmark retrieval (Radenović et al.'s cnnimageretrieval-pytorch): every
    pair of a batch, positives pulled together, negatives pushed past `margin` in Euclidean
    distance between unit vectors. pytorch-metric-learning's loss; batches as for the triplet loss."""

    def __init__(self, margin: float = 0.7):
        super().__init__()
        from pytorch_metric_learning import distances, losses

        self.loss = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=margin, distance=distances.LpDistance())

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embedding.float(), labels)


class SubCenterArcFace(nn.Module):
    """ArcFace with several centres per class (Deng et al. 2020), the head of the 2020-21 Google
    Landmarks winners: a noisy or multi-view class (inside and outside of a building) keeps a
    centre per mode instead of one mean. pytorch-metric-learning's loss, with our margin and scale,
    and the label smoothing of every other classifier head (its cross-entropy, replaced)."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        label_smoothing: float = 0.0,
        sub_centers: int = 3,
        margin: float = 0.3,
        scale: float = 30.0,
    ):
        super().__init__()
        from pytorch_metric_learning import losses

        self.loss = losses.SubCenterArcFaceLoss(
            num_classes=num_classes,
            embedding_size=dim,
            margin=math.degrees(margin),  # it takes degrees
            scale=scale,
            sub_centers=sub_centers,
        )
        self.loss.cross_entropy = nn.CrossEntropyLoss(reduction="none", label_smoothing=label_smoothing)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embedding.float(), labels)


def make_loss(
    name: str,
    dim: int,
    num_classes: int,
    label_smoothing: float = 0.0,
    triplet_margin: float = 0.1,
    triplet_mining: str = "semihard",
    contrastive_margin: float = 0.7,
) -> nn.Module:
    if name == "triplet":
        return TripletLoss(triplet_margin, triplet_mining)
    if name == "contrastive":
        return ContrastiveLoss(contrastive_margin)
    if name == "subcenter-arcface":
        return SubCenterArcFace(dim, num_classes, label_smoothing)
    if name in HEADS:
        return ClassifierLoss(make_head(name, dim, num_classes), label_smoothing)
    raise ValueError(f"unknown loss '{name}': choose from {LOSSES}")


def loss_for(config, dim: int, num_classes: int) -> nn.Module:
    """The loss a TrainConfig asks for (its head, label smoothing, triplet and contrastive settings)."""
    return make_loss(
        config.head_resolved,
        dim,
        num_classes,
        config.label_smoothing,
        config.triplet_margin,
        config.triplet_mining,
        config.contrastive_margin,
    )
