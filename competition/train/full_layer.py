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
from dataclasses import dataclass, field

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from competition.data.dataset import ImageDataset, default_workers, resize_to_tensor
from competition.data.images import read_image
from competition.errors import CompeteError
from competition.io import atomic_write_text
from competition.models.embedder import Embedder
from competition.retrieval.embed import autocast_for
from competition.train.config import RESUME_MAY_CHANGE
from competition.train.freezing import full_training_mode
from competition.train.loop import Run, seed_epoch
from competition.train.losses import make_loss
from competition.train.optim import make_optimizer
from competition.train.safety import L2SP, interpolate_weights, layer_decay_groups, resolve_freeze_bn
from competition.train.sampling import EpochSampler
from competition.train.validation import PoolScores, compare, objective

log = logging.getLogger(__name__)

WISE_FT_ALPHAS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # 0: pretrained backbone, 1: fine-tuned


class EmbeddingLoss(nn.Module):
    """Images and labels to a loss: the one module DistributedDataParallel wraps."""

    def __init__(self, embedder: Embedder, criterion: nn.Module):
        super().__init__()
        self.embedder, self.criterion = embedder, criterion

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.embedder(images), labels)


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


@dataclass
class RunState:
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_value: float = float("-inf")
    best_epoch: int = -1
    stale_epochs: int = 0


class FullLayerTrainer:
    def __init__(self, run: Run):
        self.run, self.config = run, run.config
        data = run.data
        self.fold = data.folds[0]
        self.records = data.training_records(self.fold.train)
        self.pool = [data.photos[i] for i in self.fold.pool]
        self.classes = sorted({r.label for r in self.records})
        torch.manual_seed(self.config.seed + 1)  # the head's init must not depend on what ran before
        self.criterion = make_loss(self.config.loss, run.embedder.output_dim, len(self.classes),
                                   self.config.label_smoothing, self.config.triplet_margin,
                                   self.config.triplet_mining).to(run.device)
        originals = pd.Series([r.label for r in self.records if r.split == "train"]).value_counts().to_dict()
        self.freeze_bn = resolve_freeze_bn(self.config.freeze_bn, originals)
        # WiSE-FT interpolates towards these; kept on the CPU.
        self.initial_weights = ({k: v.detach().cpu().clone() for k, v in run.embedder.state_dict().items()}
                                if self.config.wise_ft else None)
        self.state = RunState()

    # validation
    def _pool_scores(self, embedder: nn.Module) -> PoolScores:
        embedder.eval()
        vectors, _ = self.run.extract(embedder, self.pool, "validation", cached=False)
        return self.run.score(vectors, self.fold)

    def _baseline(self) -> PoolScores:
        features = self.run.pretrained_features(self.pool, "validation (pretrained)")
        return self.run.score(self.run.pool_features(features, self.fold), self.fold)

    # the loop
    def fit(self, started: float, resume: bool = False) -> dict:
        run, config = self.run, self.config
        baseline = PoolScores(np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
        if run.dist.is_main:
            run.folder.path.mkdir(parents=True, exist_ok=True)
            run.write_config(freeze_bn_resolved=self.freeze_bn)
            baseline = self._baseline()
        self.baseline = baseline.means()
        run.dist.barrier()
        try:
            self._epochs(resume)
        except KeyboardInterrupt:
            raise CompeteError(f"interrupted after epoch {self.state.epoch}; state saved: continue with "
                               f"`compete train --resume {run.folder.path}`") from None
        if not run.dist.is_main:
            return {"run": config.run_name, "rank": run.dist.rank}
        best = run.folder.load_best()
        run.embedder.load_state_dict(best["embedder"])
        if self.initial_weights is not None:
            alpha, scores = self._wise_ft(best)
        else:
            alpha, scores = None, self._pool_scores(run.embedder)
        return run.summary(started, compare(scores, baseline, seed=config.seed), baseline, scores.means(),
                           best_epoch=self.state.best_epoch, epochs_run=self.state.epoch, wise_ft_alpha=alpha)

    def _param_groups(self) -> tuple[list[dict], L2SP | None]:
        config, embedder = self.config, self.run.embedder
        backbone = embedder.backbone
        backbone_ids = {id(p) for p in backbone.parameters()}
        other_params = [p for p in embedder.parameters() if id(p) not in backbone_ids]
        backbone_lr = config.lr * config.backbone_lr_scale
        groups = (layer_decay_groups(backbone, backbone_lr, config.layer_decay) if config.layer_decay < 1 else
                  [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": backbone_lr}])
        if config.l2_sp > 0:  # pulled towards the pretrained weights instead of towards zero
            for group in groups:
                group["weight_decay"] = 0.0
        groups.append({"params": other_params + list(self.criterion.parameters()), "lr": config.lr})
        return groups, L2SP(backbone, config.l2_sp) if config.l2_sp > 0 else None

    def _epochs(self, resume: bool) -> None:
        run, config = self.run, self.config
        device = run.device
        labels = [self.classes.index(r.label) for r in self.records]
        dataset = TrainDataset([r.path for r in self.records], labels, run.image_size, config.seed)
        per_class = config.samples_per_class if config.loss == "triplet" else 1
        sampler = EpochSampler(dataset.labels, per_class, config.seed, run.dist.rank, run.dist.world)
        drop_last = len(sampler) > config.batch_size
        steps = len(sampler) // config.batch_size if drop_last else 1
        groups, l2_sp = self._param_groups()
        optimizer, scheduler = make_optimizer(config, groups, steps)
        if resume and (last := run.folder.load_last()) is not None:
            self._restore(last, optimizer, scheduler)
        model = EmbeddingLoss(run.embedder, self.criterion)
        if run.dist.active:  # gradients averaged across ranks; each rank sees its share of the epoch
            device_ids = [device.index] if device.index is not None else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
        for epoch in range(self.state.epoch, config.epochs):
            started = time.time()
            seed_epoch(config.seed, epoch)
            dataset.epoch = epoch
            sampler.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=drop_last,
                                num_workers=default_workers(), pin_memory=device.type == "cuda")
            full_training_mode(model, self.freeze_bn)
            losses = []
            for images, batch_labels, _, ok in tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}",
                                                    disable=not run.progress, leave=False):
                images, batch_labels = images[ok].to(device), batch_labels[ok].to(device)
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast_for(device):
                    loss = model(images, batch_labels)
                if l2_sp is not None:
                    loss = loss + l2_sp()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(run.embedder.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(loss.item())
            scores = self._pool_scores(run.embedder).means() if run.dist.is_main else {}
            if self._end_epoch(float(np.mean(losses)), scores, optimizer, scheduler, started):
                break

    def _end_epoch(self, loss: float, scores: dict, optimizer, scheduler, started: float) -> bool:
        """Record the epoch, keep the best checkpoint, save the resume state; True = stop early.

        Under torchrun only rank 0 has scores and writes; every rank gets its stop decision."""
        run, state = self.run, self.state
        state.epoch += 1
        if not run.dist.is_main:
            return run.dist.agree(False)
        row = {"epoch": state.epoch, "loss": loss, "lr": optimizer.param_groups[-1]["lr"],
               "seconds": round(time.time() - started, 2), **scores}
        state.history.append(row)
        log.info("epoch %d/%d  loss %.3f  %s  %.0f s", state.epoch, self.config.epochs, loss,
                 "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if "map" in k), row["seconds"])
        value = objective(scores)
        if value > state.best_value:
            state.best_value, state.best_epoch, state.stale_epochs = value, state.epoch, 0
            run.folder.save_best({"embedder_config": self.config.embedder_config().to_dict(),
                                  "embedder": run.embedder.state_dict(), "epoch": state.epoch, "scores": scores})
        else:
            state.stale_epochs += 1
        run.folder.save_last({
            "embedder": run.embedder.state_dict(), "criterion": self.criterion.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "state": {"epoch": state.epoch, "history": state.history, "best_value": state.best_value,
                      "best_epoch": state.best_epoch, "stale_epochs": state.stale_epochs},
            "config": self.config.to_dict()})
        run.folder.write_history(state.history, self.baseline)
        return run.dist.agree(state.stale_epochs >= self.config.patience)

    def _restore(self, payload: dict, optimizer, scheduler) -> None:
        may_change = (*RESUME_MAY_CHANGE, "run_name", "runs_dir")  # a moved run continues in its new place
        saved = {k: v for k, v in payload["config"].items() if k not in may_change}
        current = {k: v for k, v in self.config.to_dict().items() if k in saved}
        if saved != current:
            changed = sorted(k for k in saved if saved[k] != current.get(k))
            raise CompeteError(f"{self.run.folder.path}: cannot resume with different settings ({', '.join(changed)})")
        self.run.embedder.load_state_dict(payload["embedder"])
        self.criterion.load_state_dict(payload["criterion"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        s = payload["state"]
        self.state = RunState(s["epoch"], s["history"], s["best_value"], s["best_epoch"], s["stale_epochs"])

    def _wise_ft(self, best: dict) -> tuple[float, PoolScores]:
        """Interpolate the best checkpoint towards the pretrained weights; keep the alpha that
        retrieves best on the validation pool (ties go to the smaller, safer alpha)."""
        finetuned = best["embedder"]
        rows, scores = [], {}
        for alpha in WISE_FT_ALPHAS:
            self.run.embedder.load_state_dict(interpolate_weights(self.initial_weights, finetuned, alpha))
            scores[alpha] = self._pool_scores(self.run.embedder)
            rows.append({"alpha": alpha, **scores[alpha].means()})
        chosen = max(rows, key=lambda row: (objective(row), -row["alpha"]))["alpha"]
        atomic_write_text(self.run.folder.path / "wise_ft.csv", pd.DataFrame(rows).to_csv(index=False))
        mixed = interpolate_weights(self.initial_weights, finetuned, chosen)
        self.run.embedder.load_state_dict(mixed)
        self.run.folder.save_best({**best, "embedder": mixed, "wise_ft_alpha": chosen,
                                   "scores": scores[chosen].means()})
        log.info("WiSE-FT: alpha %.2f chosen on the validation pool", chosen)
        return chosen, scores[chosen]
