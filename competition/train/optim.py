"""The optimiser, schedule and step both regimes use: AdamW, linear warm-up, cosine decay,
gradient clipping (through a GradScaler, which is a no-op off CUDA)."""

from __future__ import annotations

import math

import torch

from competition.settings.train import TrainConfig
from competition.train.safety import L2SP, layer_decay_groups


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


def optimizer_step(
    loss: torch.Tensor, optimizer, scheduler, parameters, grad_clip: float, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backward, clip, step the optimiser and the schedule: one training step of either regime."""
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def fine_tuning_groups(
    config: TrainConfig, backbone: torch.nn.Module, head_parameters: list
) -> tuple[list[dict], L2SP | None]:
    """The full regime's optimiser groups: the backbone at lr * backbone_lr_scale (per block
    with layer decay), the head at lr; with L2-SP the backbone's pull is towards its
    pretrained weights, so its weight decay is off."""
    backbone_lr = config.lr * config.backbone_lr_scale
    groups = (
        layer_decay_groups(backbone, backbone_lr, config.layer_decay)
        if config.layer_decay < 1
        else [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": backbone_lr}]
    )
    if config.l2_sp > 0:
        for group in groups:
            group["weight_decay"] = 0.0
    groups.append({"params": head_parameters, "lr": config.lr})
    return groups, L2SP(backbone, config.l2_sp) if config.l2_sp > 0 else None
