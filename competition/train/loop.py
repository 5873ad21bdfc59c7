"""Train a retrieval embedding in one of two regimes and keep what validation supports.

- last (default): the backbone is frozen and its pooled features are computed once and
  cached on disk. The default head is a learned whitening fitted in closed form; the
  loss heads (softmax, ArcFace, CosFace, triplet) train a linear projection on the cached
  features (train/last_layer.py).
- full: every layer trains, the backbone at a lower learning rate (train/full_layer.py).

Validation holds out whole landmarks and photos of the others (train/validation.py) and
compares the trained embedding with the pretrained one on the same queries; the verdict
goes into summary.json, and `compete submit` falls back to the pretrained backbone for
a run that lost on held-out landmarks. This module only prepares a run and hands it to
its regime.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from pathlib import Path

import torch

from competition.data.features import is_features_folder
from competition.device import pick_device
from competition.distributed import init_distributed
from competition.errors import CompeteError
from competition.io import check_plain_name, exclusive_use
from competition.models.embedder import build_embedder
from competition.settings.train import TrainConfig
from competition.tracking import check_tracker, open_tracker
from competition.train.data import load_training_data
from competition.train.freezing import freeze_before
from competition.train.full_layer import FullLayerTrainer
from competition.train.last_layer import fit_last_layer
from competition.train.pseudo import add_pseudo_labels
from competition.train.run import Run, seed_everything
from competition.train.run_folder import RunFolder


def prepare_run(config: TrainConfig, progress: bool = True) -> Run:
    dist = init_distributed()
    root = Path(config.data)
    if config.regime == "full" and is_features_folder(root):
        raise CompeteError(
            f"{root} holds features computed elsewhere, not photos: the full regime trains the backbone on photos; "
            "use --regime last, or point --data at the photos"
        )
    augmented = config.augmented_folder
    if config.augmented and config.use_augmented and not augmented.is_dir():
        raise CompeteError(f"{augmented}: augmented folder not found (run `compete augment --out {augmented}`)")
    use_augmented = config.use_augmented and augmented.is_dir()
    data = load_training_data(
        root,
        augmented if use_augmented else None,
        config.folds,
        config.holdout_photos,
        config.seed,
        config.strict,
        config.landmarks,
        config.photos_per_landmark,
    )
    seed_everything(config.seed)
    embedder, origin = build_embedder(config.model, config.projection)
    if config.unfreeze_from:
        freeze_before(embedder.backbone, config.unfreeze_from)
    device = dist.device() or pick_device(config.device or None)
    embedder.to(device).eval()  # BatchNorm on running statistics until an epoch trains
    if device.type == "cuda":
        embedder.to(memory_format=torch.channels_last)
    run = Run(
        config,
        data,
        embedder,
        origin,
        RunFolder(Path(config.runs_dir) / config.run_name),
        device,
        dist,
        progress and dist.is_main,
    )
    if config.pseudo_labels:
        add_pseudo_labels(run)
    return run


def default_run_name(config: TrainConfig) -> str:
    return f"{config.model.backbone}-{config.regime}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train one run; returns its summary (validation against the pretrained backbone, wall time)."""
    if not config.run_name:
        config.run_name = default_run_name(config)
    check_plain_name(config.run_name, "run name", "--runs-dir")
    check_tracker(config.log_to)
    started = time.time()
    folder = RunFolder(Path(config.runs_dir) / config.run_name)
    # One process writes a run folder: a second `train --name same` stops at once (rank 0 holds it under torchrun).
    held = exclusive_use(folder.path, "run") if init_distributed().is_main else contextlib.nullcontext()
    with held:
        if folder.holds_checkpoint and not resume:
            raise CompeteError(f"{folder.path} already exists: pick another --name, or --resume to continue it")
        run = prepare_run(config, progress)
        if run.dist.is_main:
            run.folder.tracker = open_tracker(config.log_to, config.run_name, config.runs_dir, config.to_dict())
        try:
            if config.regime == "last":
                if not run.dist.is_main:  # seconds of work on cached features: rank 0 does it alone
                    return {"run": config.run_name, "rank": run.dist.rank}
                return fit_last_layer(run, started)
            return FullLayerTrainer(run).fit(started, resume)
        finally:
            if run.folder.tracker is not None:
                run.folder.tracker.close()
