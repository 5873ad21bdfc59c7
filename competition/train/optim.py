"""The optimiser and learning-rate schedule both regimes use: AdamW, linear warm-up, cosine decay."""

from __future__ import annotations

import math

import torch

from competition.train.config import TrainConfig


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(config: TrainConfig, groups: list[dict], steps_per_epoch: int):
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
    return optimizer, scheduler
