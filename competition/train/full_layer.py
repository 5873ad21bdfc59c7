"""The full regime: every layer trains on images, validated on the first fold each epoch.

The backbone learns at `backbone_lr_scale` times the head's rate, BatchNorm statistics
stay pretrained when classes are small, and the guards of train/safety.py limit drift.
The first fold's held-out landmarks and photos never train, so the validation pool
measures what the test will. The best epoch on that pool is kept in best.pt, the whole
state after every epoch in last.pt for --resume; WiSE-FT then mixes pretrained and
fine-tuned weights at the alpha the pool scores best.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from competition.data.dataset import ImageDataset, loader_workers, quiet_worker, resize_to_tensor
from competition.data.images import read_image
from competition.device import autocast_for, compiled, half_precision_on
from competition.errors import CompeteError
from competition.io import atomic_write_text
from competition.models.embedder import Embedder
from competition.models.view import training_crop
from competition.progress import steps
from competition.runs import WISE_FT
from competition.settings.choices import PAIR_LOSSES
from competition.settings.train import TrainConfig
from competition.train.config import check_same_settings
from competition.train.freezing import freeze_unused, full_training_mode
from competition.train.label_fusion import fit_label_fusion
from competition.train.losses import loss_for
from competition.train.optim import fine_tuning_groups, make_optimizer, optimizer_step
from competition.train.postprocess_choice import choose_postprocess
from competition.train.run import Run, seed_epoch
from competition.train.safety import cpu_copy, interpolate_weights, resolve_freeze_bn
from competition.train.sampling import EpochSampler
from competition.train.validation import PoolScores, compare, map_scores, objective
from competition.train.vlad import start_vlad

log = logging.getLogger(__name__)

WISE_FT_ALPHAS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # 0: pretrained backbone, 1: fine-tuned


class EmbeddingLoss(nn.Module):
    """Images and labels to a loss: the one module DistributedDataParallel wraps."""

    def __init__(self, embedder: Embedder, criterion: nn.Module):
        super().__init__()
        self.embedder, self.criterion = embedder, criterion

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding = self.embedder(images)
        # the head and loss in float32, out of the caller's autocast: bf16 cosines round every target
        # within ~3.6 degrees of its centre to 1.0, where a margin head has no gradient left
        with torch.autocast(embedding.device.type, enabled=False):
            return self.criterion(embedding.float(), labels)


class TrainDataset(ImageDataset):
    """Light online augmentation on top of the offline set, seeded per (epoch, photo)."""

    def __init__(self, paths, labels, size: int, seed: int):
        super().__init__(paths, labels, size=size)
        self.augment = A.Compose([A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0)), A.HorizontalFlip()])
        self.seed, self.epoch = seed, 0

    def load(self, index: int) -> torch.Tensor:
        self.augment.set_random_seed(self.seed * 1_000_003 + self.epoch * 100_003 + index)
        image = self.augment(image=read_image(self.paths[index]))["image"]
        return resize_to_tensor(image, self.size)


def train_one_epoch(model: nn.Module, batches, step, l2_sp, device: torch.device, precision: str = "auto") -> float:
    """One pass over (images, labels, _, readable) batches; `step(loss)` updates the weights and
    `l2_sp`, when given, adds the pull towards the start. Returns the mean loss."""
    losses = []
    for images, labels, _, ok in batches:
        if not ok.all():  # indexing copies the batch out of pinned memory: only when a photo failed
            images, labels = images[ok], labels[ok]
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, precision):
            loss = model(images, labels)
        if l2_sp is not None:
            loss = loss + l2_sp()
        step(loss)
        losses.append(loss.detach())  # read once an epoch: .item() each step would wait for the GPU
    return float(torch.stack(losses).float().mean()) if losses else float("nan")


def trained_model(model: nn.Module, dist, device: torch.device, compile: bool) -> nn.Module:
    """What the steps call: under torchrun a DDP wrapper (gradients averaged across ranks, each
    seeing its share of the epoch), compiled around DDP rather than inside it, so the compiler
    splits the graph at DDP's buckets and their all-reduce overlaps the backward pass. The run
    saves the embedder itself, never a wrapper of it."""
    if dist.active:
        model = nn.parallel.DistributedDataParallel(model, device_ids=None if device.index is None else [device.index])
    return compiled(model, device, compile)


def choose_wise_ft(run: Run, initial: dict, best: dict, pool_scores) -> tuple[float, PoolScores]:
    """Interpolate the best checkpoint towards the pretrained weights; keep the alpha that
    retrieves best on the validation pool (ties go to the smaller, safer alpha)."""
    scores = {}
    for alpha in WISE_FT_ALPHAS:
        run.embedder.load_state_dict(interpolate_weights(initial, best["embedder"], alpha))
        scores[alpha] = pool_scores()
    rows = [{"alpha": alpha, **pool.means()} for alpha, pool in scores.items()]
    chosen = max(rows, key=lambda row: (objective(row), -row["alpha"]))["alpha"]
    atomic_write_text(run.folder.path / WISE_FT, pd.DataFrame(rows).to_csv(index=False))
    run.embedder.load_state_dict(interpolate_weights(initial, best["embedder"], chosen))
    run.save_best(best["epoch"], scores[chosen].means(), wise_ft_alpha=chosen)
    log.info("WiSE-FT: alpha %.2f chosen on the validation pool", chosen)
    return chosen, scores[chosen]


def choices_on_final_embedding(run: Run, fold, baseline: PoolScores) -> dict:
    """The label classifier (train/label_fusion.py, added to best.pt) and the post-processing
    (train/postprocess_choice.py), chosen on every photo's final embedding. The backbone trained
    on the fold's training photos only, so its pool still measures what the test will."""
    vectors, _ = run.extract(run.embedder, run.data.photos, "final embedding", cached=False)
    choices = {"postprocess": choose_postprocess([(vectors[fold.pool], fold)], run.data.labels, run.config.seed)}
    if run.config.landmarks != "new":  # new: the labels never reach the ranking
        same = lambda _: lambda v: v  # noqa: E731 - one trained network for every fold
        choices["label_fusion"], classifier = fit_label_fusion(
            vectors, run.data.labels, [fold], [fold], same, same(None), baseline, run.config.seed
        )
        run.folder.save_best(run.folder.load_best() | {"label_classifier": classifier.to_payload()})
    return choices


def _optimiser(run: Run, criterion: nn.Module, steps_per_epoch: int):
    """(optimizer, scheduler, L2-SP penalty): the backbone and the head (the embedder's projection
    and the loss's own weights) in their own groups, the backbone at its lower rate."""
    backbone_ids = {id(p) for p in run.embedder.backbone.parameters()}
    head = [p for p in run.embedder.parameters() if id(p) not in backbone_ids] + list(criterion.parameters())
    groups, l2_sp = fine_tuning_groups(run.config, run.embedder.backbone, head)
    optimizer, scheduler = make_optimizer(run.config, groups, steps_per_epoch)
    return optimizer, scheduler, l2_sp


def _loader(
    dataset: TrainDataset, sampler: EpochSampler, drop_last: bool, config: TrainConfig, device: torch.device
) -> DataLoader:
    """One epoch's batches, made afresh each epoch (the dataset and sampler know the epoch)."""
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=loader_workers(config.workers),
        worker_init_fn=quiet_worker,
        pin_memory=device.type == "cuda",
    )


@dataclass
class RunState:
    """What --resume restores besides the weights and the optimiser."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_value: float = float("-inf")
    best_epoch: int = -1
    stale_epochs: int = 0


class FullLayerTrainer:
    def __init__(self, run: Run):
        self.run, self.config, data = run, run.config, run.data
        self.fold = data.folds[0]
        self.records = data.training_records(self.fold.train)
        self.pool = [data.photos[i] for i in self.fold.pool]
        self.classes = sorted({r.label for r in self.records})
        start_vlad(run, self.records)  # NetVLAD's centres, before the baseline and WiSE-FT's start copy them
        torch.manual_seed(self.config.seed + 1)  # the head's init must not depend on what ran before
        self.criterion = loss_for(self.config, run.embedder.output_dim, len(self.classes)).to(run.device)
        originals = pd.Series([r.label for r in self.records if r.split == "train"]).value_counts().to_dict()
        self.freeze_bn = resolve_freeze_bn(self.config.freeze_bn, originals)
        self.initial_weights = cpu_copy(run.embedder.state_dict()) if self.config.wise_ft else None  # WiSE-FT's start
        self.state = RunState()

    def _pool_scores(self) -> PoolScores:
        return self.run.embedder_scores(self.pool, self.fold)

    def fit(self, started: float, resume: bool = False) -> dict:
        run = self.run
        baseline = PoolScores(np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
        if run.dist.is_main:
            run.folder.path.mkdir(parents=True, exist_ok=True)
            run.write_config(freeze_bn_resolved=self.freeze_bn)
            features = run.pretrained_features(self.pool, "validation (pretrained)")
            baseline = run.score(run.pool_features(features, self.fold), self.fold)
        self.baseline = baseline.means()
        run.dist.barrier()
        try:
            self._epochs(resume)
        except KeyboardInterrupt:
            raise CompeteError(
                f"interrupted after epoch {self.state.epoch}; state saved: continue with "
                f"`compete train --resume {run.folder.path}`"
            ) from None
        if not run.dist.is_main:
            return {"run": self.config.run_name, "rank": run.dist.rank}
        best = run.folder.load_best()
        run.embedder.load_state_dict(best["embedder"])
        if self.initial_weights is not None:
            alpha, scores = choose_wise_ft(run, self.initial_weights, best, self._pool_scores)
        else:
            alpha, scores = None, self._pool_scores()
        return run.summary(
            started,
            compare(scores, baseline, seed=self.config.seed),
            baseline,
            scores.means(),
            best_epoch=self.state.best_epoch,
            epochs_run=self.state.epoch,
            wise_ft_alpha=alpha,
            **choices_on_final_embedding(run, self.fold, baseline),
        )

    def _epochs(self, resume: bool) -> None:
        run, config, device = self.run, self.config, self.run.device
        labels = [self.classes.index(r.label) for r in self.records]
        dataset = TrainDataset([r.path for r in self.records], labels, training_crop(config.model), config.seed)
        per_class = config.samples_per_class if config.head_resolved in PAIR_LOSSES else 1
        sampler = EpochSampler(dataset.labels, per_class, config.seed, run.dist.rank, run.dist.world)
        drop_last = len(sampler) > config.batch_size
        freeze_unused(run.embedder, training_crop(config.model))
        steps_per_epoch = len(sampler) // config.batch_size if drop_last else 1
        optimizer, scheduler, l2_sp = _optimiser(run, self.criterion, steps_per_epoch)
        # fp16's narrow range needs the loss scaled; bf16 and float32 do not
        half = half_precision_on(device, config.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=half == torch.float16)
        if resume and (last := run.folder.load_last()) is not None:
            self._restore(last, optimizer, scheduler)
        model = trained_model(EmbeddingLoss(run.embedder, self.criterion), run.dist, device, config.compile)
        clipped = list(run.embedder.parameters())

        def step(loss: torch.Tensor) -> None:
            optimizer_step(loss, optimizer, scheduler, clipped, config.grad_clip, self.scaler)

        for epoch in range(self.state.epoch, config.epochs):
            started = time.time()
            seed_epoch(config.seed, epoch)
            dataset.epoch = epoch
            sampler.set_epoch(epoch)
            full_training_mode(model, self.freeze_bn)
            loader = _loader(dataset, sampler, drop_last, config, device)
            progress = steps(loader, f"epoch {epoch + 1}/{config.epochs}", enabled=run.progress, leave=False)
            loss = train_one_epoch(model, progress, step, l2_sp, device, config.precision)
            scores = self._pool_scores().means() if run.dist.is_main else {}
            if self._end_epoch(loss, scores, optimizer, scheduler, started):
                break

    def _end_epoch(self, loss: float, scores: dict, optimizer, scheduler, started: float) -> bool:
        """Record the epoch, keep the best checkpoint, save the resume state; True = stop early.

        Under torchrun only rank 0 has scores and writes; every rank gets its stop decision."""
        run, state = self.run, self.state
        state.epoch += 1
        if not run.dist.is_main:
            return run.dist.agree(False)
        row = {
            "epoch": state.epoch,
            "loss": loss,
            "lr": optimizer.param_groups[-1]["lr"],
            "seconds": round(time.time() - started, 2),
            **scores,
        }
        state.history.append(row)
        log.info(
            "epoch %d/%d  loss %.3f  %s  %.0f s",
            state.epoch,
            self.config.epochs,
            loss,
            map_scores(scores),
            row["seconds"],
        )
        if objective(scores) > state.best_value:
            state.best_value, state.best_epoch, state.stale_epochs = objective(scores), state.epoch, 0
            run.save_best(state.epoch, scores)
        else:
            state.stale_epochs += 1
        run.folder.save_last(
            {
                "embedder": run.embedder.state_dict(),
                "criterion": self.criterion.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),  # fp16's loss scale, learnt over the steps so far
                "state": asdict(state),
                "config": self.config.to_dict(),
            }
        )
        run.folder.write_history(state.history, self.baseline)
        return run.dist.agree(state.stale_epochs >= self.config.patience)

    def _restore(self, payload: dict, optimizer, scheduler) -> None:
        check_same_settings(payload["config"], self.config, self.run.folder.path)
        self.run.embedder.load_state_dict(payload["embedder"])
        self.criterion.load_state_dict(payload["criterion"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):  # runs before v0.5 kept none: the scale is learnt again
            self.scaler.load_state_dict(payload["scaler"])
        self.state = RunState(**payload["state"])
