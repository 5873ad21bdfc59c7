"""NetVLAD's starting centres (models/pooling.NetVLAD): k-means over the local descriptors of a
seeded sample of the run's training photos, at the view the run embeds at, before the first
epoch (and before the pretrained baseline, which pools with them too)."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from competition.data.dataset import resize_to_tensor
from competition.data.discover import ImageRecord
from competition.data.images import UnreadableImage, read_image
from competition.models.pooling import learned
from competition.train.run import Run

log = logging.getLogger(__name__)

FIT_PHOTOS = 256  # photos whose descriptors the k-means sees: a few per landmark at competition sizes
FIT_DESCRIPTORS = 50_000  # a seeded sample of their positions (a 384 px view gives ~150 a photo)


def start_vlad(run: Run, records: list[ImageRecord]) -> None:
    """Fit the run's NetVLAD centres on `records` (the fold's training photos) if it has one."""
    pooling = run.embedder.pooling
    if not learned(pooling) or bool(pooling.fitted):
        return
    rng = np.random.default_rng(run.config.seed)
    originals = [r for r in records if r.split == "train"] or records  # augmented variants add little here
    chosen = rng.choice(len(originals), min(FIT_PHOTOS, len(originals)), replace=False)
    descriptors = local_descriptors(run, [originals[i] for i in sorted(chosen)])
    if len(descriptors) > FIT_DESCRIPTORS:
        descriptors = descriptors[rng.choice(len(descriptors), FIT_DESCRIPTORS, replace=False)]
    pooling.fit(descriptors, seed=run.config.seed)
    log.info(
        "vlad: %d centres fitted on %d descriptors of %d photos", len(pooling.centres), len(descriptors), len(chosen)
    )


@torch.no_grad()
def local_descriptors(run: Run, records: list[ImageRecord]) -> np.ndarray:
    """Every position of each photo's feature map, L2-normalised: (positions, channels)."""
    view, parts = run.view, []
    for record in records:
        try:
            image = read_image(record.path, needed=view.size)
        except UnreadableImage:
            continue  # named already by training's own checks
        tensor = resize_to_tensor(image, view.size, view.resize)[None].to(run.device)
        features = run.embedder.feature_map(tensor).float()
        parts.append(F.normalize(features, dim=1).flatten(2)[0].T.cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, run.embedder.backbone.feature_dim), np.float32)
