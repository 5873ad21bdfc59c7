"""How long each configuration of a sweep should take here: a forward-pass throughput measured
on this machine per backbone and input size, times the photos each configuration must push
through it, counting what an earlier configuration already cached."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from competition.data.discover import discover_competition
from competition.device import autocast_for
from competition.models.embedder import build_embedder
from competition.models.view import model_view
from competition.runs import features_cache
from competition.settings.model import ModelSettings
from competition.submit.models import view_of
from competition.sweep.plan import SweepPlan

log = logging.getLogger(__name__)

FULL_PASS_COST = 3.0  # a training step (forward + backward) costs about three forwards
WISE_FT_POOL_PASSES = 6


def measure_throughput(model: ModelSettings, device: torch.device, batch: int = 8, precision: str = "auto") -> float:
    """Images per second through the model's backbone at its view on this machine (random weights: the
    same cost), in the precision and memory layout embedding uses there. CUDA runs asynchronously: the
    clock stops when the GPU has finished, not when the work was queued."""
    model = model.model_copy(update={"pretrained": False})
    embedder, _ = build_embedder(model)
    embedder.to(device).eval()
    size = model_view(model).size
    images = torch.rand(batch, 3, size, size, device=device)
    if device.type == "cuda":
        embedder.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast_for(device, precision):
        embedder.pooled(images)  # warm-up
        finished(device)
        started = time.perf_counter()
        embedder.pooled(images)
        finished(device)
    return batch / max(time.perf_counter() - started, 1e-6)


def finished(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_seconds(plan: SweepPlan, device: torch.device, finished: set[str] = frozenset()) -> dict[str, float]:
    """Seconds each configuration should take here, counting what an earlier one already cached
    (by the caches' own key, runs.features_cache); a finished configuration costs 0 and its
    backbone is not probed."""
    found = discover_competition(plan.file.data, need_train=any(c.trained for c in plan.configurations))
    photos, unlabeled = len(found.train), len(found.query) + len(found.gallery)
    submits = [plan.submit_config(["x"], variant, "x") for variant in plan.variants]
    throughput: dict[Path, float] = {}
    cached: set[Path] = set()  # pooled features of a frozen backbone (runs/feature-cache)
    estimates = {}
    for configuration in plan.configurations:
        config = plan.train_config(configuration) if configuration.trained else None
        model = config.model if config else submits[0].off_the_shelf_model(configuration.backbone)
        origin = f"{model.pretrained}|{model.weights_file}"  # the weights load_pretrained will find
        own = model_view(model)
        views = {view_of(model, submit) for submit in submits}
        work = {}  # cache -> photos through the backbone to fill it
        if configuration.regime == "last":
            work[features_cache(plan.file.runs_dir, model, origin, own)] = photos
        if configuration.regime != "full":  # query and gallery through the frozen backbone
            work |= {features_cache(plan.file.runs_dir, model, origin, view): unlabeled * view.passes for view in views}
        images = sum(count for key, count in work.items() if key not in cached)
        cached.update(work)
        if configuration.id in finished:  # nothing left to do, and what it cached serves the others
            estimates[configuration.id] = 0.0
            continue
        if config is not None and configuration.regime == "full":
            trained = photos * (plan.file.augment_target / 10 if configuration.augment != "none" else 1)
            pool = photos / config.folds
            images += config.epochs * (trained * FULL_PASS_COST + pool) + WISE_FT_POOL_PASSES * pool
            images += unlabeled * sum(view.passes for view in views)
        speed = features_cache(plan.file.runs_dir, model, origin, own)
        if speed not in throughput:
            try:
                throughput[speed] = measure_throughput(model, device)
            except Exception as error:  # an unknown or unbuildable backbone: it will fail and say why
                log.debug("no throughput for %s: %s", model.backbone, error)
                throughput[speed] = float("nan")
        estimates[configuration.id] = images / throughput[speed]
    return estimates
