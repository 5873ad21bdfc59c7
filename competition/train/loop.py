"""Train a retrieval embedding in one of two regimes and keep the best checkpoint.

- last: the backbone is frozen; pooled features are computed once and cached on disk,
  and only the projection and the classification head train (seconds on a CPU).
- full: every layer trains, the backbone at a lower learning rate, BatchNorm
  statistics frozen by default (few photos per class make batch statistics noisy).

Every epoch is validated as retrieval on held-out photos of training classes (seen)
and on held-out classes (unseen), next to the untrained backbone's score on the same
photos; the best epoch on unseen classes is kept.
"""

from __future__ import annotations

import logging
import math
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import competition
from competition.data.checks import cross_class_duplicates, readable_records, require_every_class
from competition.data.dataset import ImageDataset, default_workers, resize_to_tensor
from competition.data.discover import ImageRecord, discover_competition, discover_train
from competition.data.images import read_image
from competition.errors import CompeteError
from competition.evaluate.metrics import score_ranking
from competition.io import atomic_write_json, atomic_write_text, fingerprint
from competition.models.embedder import Embedder, build_embedder
from competition.report.plots import plot_training_curves
from competition.retrieval.embed import autocast_for, extract_features, pick_device
from competition.retrieval.search import leave_one_out_ranking
from competition.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from competition.train.config import TrainConfig
from competition.train.distributed import init_distributed
from competition.train.freezing import freeze_before, full_training_mode
from competition.train.losses import make_loss
from competition.train.pseudo import calibrate_threshold, pseudo_classes
from competition.train.safety import L2SP, interpolate_weights, layer_decay_groups, resolve_freeze_bn
from competition.train.sampling import EpochSampler, epoch_order
from competition.train.splits import Split, make_split

log = logging.getLogger(__name__)


# --- validation -------------------------------------------------------------------------

def validation_scores(vectors: dict[str, np.ndarray], labels: dict[str, list[str]]) -> dict[str, float]:
    """Leave-one-out retrieval top-1/3/10 and mAP@10 within each validation group."""
    scores: dict[str, float] = {}
    for group in ("seen", "unseen"):
        if group in vectors and len(vectors[group]) > 1:
            ranking = leave_one_out_ranking(vectors[group], k=10)
            for key, value in score_ranking(ranking, labels[group], labels[group]).items():
                if key != "queries":
                    scores[f"{group}_{key}"] = value
    return scores


def selection_key(scores: dict[str, float]) -> tuple[float, ...]:
    """Unseen-class retrieval first (what generalises), then seen, top-1 before mAP."""
    return tuple(scores.get(k, -1.0) for k in ("unseen_top1", "unseen_map@10", "seen_top1", "seen_map@10"))


WISE_FT_ALPHAS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # 0: pretrained backbone, 1: fine-tuned


# --- provenance ---------------------------------------------------------------------------

def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(competition.__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(split: Split) -> dict:
    import timm
    import torchvision

    files = sorted(f"{r.name}|{r.path.stat().st_size}" for r in split.train + split.val_seen + split.val_unseen)
    return {"git_commit": _git_commit(), "compete": competition.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "data_fingerprint": fingerprint(files), "split": split.summary(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# --- shared pieces -----------------------------------------------------------------------

@dataclass
class RunState:
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_key: tuple = ()
    best_epoch: int = -1
    stale_epochs: int = 0


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> None:
    """Randomness inside an epoch (dropout, drop-path) from (seed, epoch): a resumed run repeats it."""
    torch.manual_seed(seed * 1_000_003 + epoch)


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


# --- the trainer --------------------------------------------------------------------------

class Trainer:
    def __init__(self, config: TrainConfig, progress: bool = True):
        self.config = config
        self.dist = init_distributed()
        self.progress = progress and self.dist.is_main
        self.device = self.dist.device() or pick_device(config.device or None)
        root = Path(config.data)
        found = discover_train(root / "train")
        cross_class_duplicates(found)
        records, self.skipped = readable_records(found, strict=config.strict)
        require_every_class(found, records)
        augmented = Path(config.augmented) if config.augmented else root / "augmented"
        if config.augmented and config.use_augmented and not augmented.is_dir():
            raise CompeteError(f"{augmented}: augmented folder not found (run `compete augment --out {augmented}`)")
        use_augmented = config.use_augmented and augmented.is_dir()
        self.split = make_split(records, root.resolve(), augmented if use_augmented else None,
                                config.holdout_classes, config.holdout_images, config.seed)
        if len(self.split.classes) < 2:
            raise CompeteError(f"{root / 'train'}: need at least 2 training classes, found {len(self.split.classes)}")
        if config.regime == "last" and config.embedding_dim <= 0:
            raise CompeteError("the last-layer regime trains only a projection: give --embedding-dim > 0")
        self.run_dir = Path(config.runs_dir) / config.run_name
        seed_everything(config.seed)
        self.embedder, self.weights_origin = build_embedder(config.embedder_config())
        if config.unfreeze_from:
            freeze_before(self.embedder.backbone, config.unfreeze_from)
        self.embedder.to(self.device)
        if self.device.type == "cuda":
            self.embedder.to(memory_format=torch.channels_last)
        self.pseudo = self._add_pseudo_labels(root) if config.pseudo_labels else {}
        self.class_index = {c: i for i, c in enumerate(self.split.classes)}
        torch.manual_seed(config.seed + 1)  # the head's init must not depend on what ran before (e.g. pseudo-labels)
        self.criterion = make_loss(config.head, self.embedder.output_dim, len(self.split.classes),
                                   config.label_smoothing, config.triplet_margin, config.triplet_mining).to(self.device)
        self.state = RunState()
        originals = pd.Series([r.label for r in self.split.train if r.split == "train"]).value_counts().to_dict()
        self.freeze_bn = resolve_freeze_bn(config.freeze_bn, originals)
        # WiSE-FT interpolates towards these; kept on the CPU.
        self.initial_weights = ({k: v.detach().cpu().clone() for k, v in self.embedder.state_dict().items()}
                                if config.wise_ft and config.regime == "full" else None)
        self.final_scores: dict | None = None

    def _add_pseudo_labels(self, root: Path) -> dict:
        """Extra training classes from confident mutual neighbours among query/gallery photos."""
        competition = discover_competition(root, need_train=False)
        unlabeled = competition.query + competition.gallery
        if not unlabeled or not self.split.val_unseen:
            log.warning("pseudo-labels need query/gallery photos and held-out classes to calibrate on; skipped")
            return {}
        held_out, _ = self._extract(self.embedder.pooled, self.split.val_unseen, cached=True, description="calibrate")
        threshold = calibrate_threshold(held_out, [r.label for r in self.split.val_unseen], self.config.pseudo_precision)
        if threshold is None:
            log.warning("pseudo-labels: no similarity reaches precision %.2f on held-out classes; none added",
                        self.config.pseudo_precision)
            return {}
        vectors, failed = self._extract(self.embedder.pooled, unlabeled, cached=True, description="pseudo-labels")
        unreadable = set(failed)  # their zero vectors must not pair up
        readable = np.array([r.path not in unreadable for r in unlabeled])
        added = pseudo_classes([r for r, ok in zip(unlabeled, readable) if ok], vectors[readable], threshold)
        self.split.train += added
        self.split.classes += sorted({r.label for r in added})
        return {"threshold": threshold, "images": len(added), "classes": len({r.label for r in added})}

    @property
    def samples_per_class(self) -> int:
        return self.config.samples_per_class if self.config.head == "triplet" else 1

    # features and validation
    def _cache_file(self) -> Path:
        c = self.config
        tag = fingerprint([self.weights_origin])[:8]
        return Path(c.runs_dir) / "feature-cache" / f"{c.backbone}-{tag}-{c.pooling}{c.gem_p:g}-{c.image_size}.npz"

    def _extract(self, fn, records: list[ImageRecord], cached: bool, description: str) -> tuple[np.ndarray, list]:
        return extract_features(fn, [r.path for r in records], self.config.image_size, self.device,
                                cache_file=self._cache_file() if cached else None, batch_size=self.config.batch_size,
                                description=description, progress=self.progress)

    def _val_labels(self) -> dict[str, list[str]]:
        return {"seen": [r.label for r in self.split.val_seen], "unseen": [r.label for r in self.split.val_unseen]}

    def _val_vectors(self, fn, cached: bool) -> dict[str, np.ndarray]:
        return {group: self._extract(fn, records, cached, f"val {group}")[0]
                for group, records in (("seen", self.split.val_seen), ("unseen", self.split.val_unseen)) if records}

    # bookkeeping
    def _write_config(self) -> None:
        atomic_write_json(self.run_dir / "config.json", {**self.config.to_dict(), "weights_origin": self.weights_origin,
                                                         "freeze_bn_resolved": self.freeze_bn,
                                                         "pseudo_labels_added": self.pseudo,
                                                         "classes": self.split.classes,
                                                         "provenance": provenance(self.split)})

    def _end_epoch(self, loss: float, scores: dict, optimizer, scheduler, started: float) -> bool:
        """Record the epoch, keep the best checkpoint, save the resume state; True = stop early.

        Under torchrun only rank 0 has scores and writes; every rank gets its stop decision."""
        if not self.dist.is_main:
            self.state.epoch += 1
            return self.dist.agree(False)
        state = self.state
        state.epoch += 1
        state.history.append({"epoch": state.epoch, "loss": loss, "lr": optimizer.param_groups[-1]["lr"],
                              "seconds": round(time.time() - started, 2), **scores})
        key = selection_key(scores)
        if not state.best_key or key > tuple(state.best_key):
            state.best_key, state.best_epoch, state.stale_epochs = key, state.epoch, 0
            save_checkpoint(self.run_dir / BEST, {"embedder_config": self.config.embedder_config().to_dict(),
                                                  "embedder": self.embedder.state_dict(), "epoch": state.epoch,
                                                  "scores": scores})
        else:
            state.stale_epochs += 1
        save_checkpoint(self.run_dir / LAST, {
            "embedder": self.embedder.state_dict(), "criterion": self.criterion.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "state": {"epoch": state.epoch, "history": state.history, "best_key": list(state.best_key),
                      "best_epoch": state.best_epoch, "stale_epochs": state.stale_epochs},
            "config": self.config.to_dict()})
        metrics = pd.DataFrame(state.history)
        atomic_write_text(self.run_dir / "metrics.csv", metrics.to_csv(index=False))
        plot_training_curves(metrics, self.baseline, self.run_dir / "curves.png")
        return self.dist.agree(state.stale_epochs >= self.config.patience)

    def _restore(self, optimizer, scheduler) -> None:
        payload = load_checkpoint(self.run_dir / LAST)
        saved = {k: v for k, v in payload["config"].items() if k not in ("epochs", "patience", "device")}
        current = {k: v for k, v in self.config.to_dict().items() if k in saved}
        if saved != current:
            changed = sorted(k for k in saved if saved[k] != current.get(k))
            raise CompeteError(f"{self.run_dir}: cannot resume with different settings ({', '.join(changed)})")
        self.embedder.load_state_dict(payload["embedder"])
        self.criterion.load_state_dict(payload["criterion"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        s = payload["state"]
        self.state = RunState(s["epoch"], s["history"], tuple(s["best_key"]), s["best_epoch"], s["stale_epochs"])

    def _finish(self, started: float) -> dict:
        if not self.dist.is_main:
            return {"run": self.config.run_name, "rank": self.dist.rank}
        best = self.state.history[self.state.best_epoch - 1] if self.state.best_epoch > 0 else {}
        best = self.final_scores or best
        beat = {g: best.get(f"{g}_top1", 0) > self.baseline.get(f"{g}_top1", 1) for g in ("seen", "unseen")
                if f"{g}_top1" in self.baseline}
        summary = {"run": self.config.run_name, "best_epoch": self.state.best_epoch, "epochs_run": self.state.epoch,
                   "best": best, "baseline": self.baseline, "beats_pretrained": beat, "skipped_files": self.skipped,
                   "wall_seconds": round(time.time() - started, 1)}
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    # the two regimes
    def fit(self, resume: bool = False) -> dict:
        started = time.time()
        if (self.run_dir / BEST).exists() and not resume:
            raise CompeteError(f"{self.run_dir} already exists: pick another --name, or --resume to continue it")
        if self.config.regime == "last" and not self.dist.is_main:
            return self._finish(started)  # seconds of work on cached features: rank 0 does it alone
        self.baseline = {}
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
            self.embedder.eval()
            # The untrained backbone on the same validation photos: the score to beat.
            self.baseline = validation_scores(self._val_vectors(self.embedder.pooled, cached=True), self._val_labels())
            atomic_write_json(self.run_dir / "baseline.json", self.baseline)
        self.dist.barrier()
        try:
            if self.config.regime == "last":
                self._fit_last(resume)
            else:
                self._fit_full(resume)
                if self.initial_weights is not None and self.dist.is_main:
                    self._wise_ft()
        except KeyboardInterrupt:
            raise CompeteError(f"interrupted after epoch {self.state.epoch}; state saved: continue with "
                               f"`compete train --resume {self.run_dir}`") from None
        return self._finish(started)

    def _optimizer(self, groups: list[dict], steps_per_epoch: int):
        optimizer = torch.optim.AdamW(groups, lr=self.config.lr, weight_decay=self.config.weight_decay)
        total = self.config.epochs * steps_per_epoch
        warmup = self.config.warmup_epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
        return optimizer, scheduler

    def _labels_of(self, records: list[ImageRecord]) -> np.ndarray:
        return np.array([self.class_index[r.label] for r in records], dtype=np.int64)

    def _fit_last(self, resume: bool) -> None:
        config = self.config
        features, failed = self._extract(self.embedder.pooled, self.split.train, cached=True, description="features")
        unreadable = set(failed)
        keep = np.array([r.path not in unreadable for r in self.split.train])
        x_train = torch.from_numpy(features[keep]).to(self.device)
        y_train = torch.from_numpy(self._labels_of(self.split.train)[keep]).to(self.device)
        val_features = self._val_vectors(self.embedder.pooled, cached=True)
        trainable = list(self.embedder.projection.parameters()) + list(self.criterion.parameters())
        samples = len(epoch_order(y_train.cpu().numpy(), self.samples_per_class, config.seed, 0))
        steps = max(1, samples // config.batch_size)
        optimizer, scheduler = self._optimizer([{"params": trainable}], steps)
        if resume and (self.run_dir / LAST).exists():
            self._restore(optimizer, scheduler)
        epochs = tqdm(range(self.state.epoch, config.epochs), desc="training (last layer)", disable=not self.progress)
        for epoch in epochs:
            started = time.time()
            seed_epoch(config.seed, epoch)
            self.embedder.projection.train()
            self.criterion.train()
            order = torch.from_numpy(epoch_order(y_train.cpu().numpy(), self.samples_per_class, config.seed, epoch))
            losses = []
            for batch in torch.split(order, config.batch_size)[:steps]:
                batch = batch.to(self.device)
                loss = self.criterion(self.embedder.projection(x_train[batch]), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            self.embedder.projection.eval()
            with torch.no_grad():
                projected = {g: self.embedder.projection(torch.from_numpy(v).to(self.device)).cpu().numpy()
                             for g, v in val_features.items()}
            scores = validation_scores(projected, self._val_labels())
            epochs.set_postfix(loss=f"{np.mean(losses):.3f}", unseen=f"{scores.get('unseen_top1', float('nan')):.3f}")
            if self._end_epoch(float(np.mean(losses)), scores, optimizer, scheduler, started):
                break

    def _wise_ft(self) -> None:
        """Interpolate the best checkpoint towards the pretrained weights; keep the alpha that
        retrieves best on held-out classes (ties go to the smaller, safer alpha)."""
        payload = load_checkpoint(self.run_dir / BEST)
        finetuned = payload["embedder"]
        rows = []
        for alpha in WISE_FT_ALPHAS:
            self.embedder.load_state_dict(interpolate_weights(self.initial_weights, finetuned, alpha))
            self.embedder.eval()
            scores = validation_scores(self._val_vectors(self.embedder, cached=False), self._val_labels())
            rows.append({"alpha": alpha, **scores})
        chosen = max(rows, key=lambda row: (selection_key(row), -row["alpha"]))
        atomic_write_text(self.run_dir / "wise_ft.csv", pd.DataFrame(rows).to_csv(index=False))
        mixed = interpolate_weights(self.initial_weights, finetuned, chosen["alpha"])
        self.embedder.load_state_dict(mixed)
        save_checkpoint(self.run_dir / BEST, {**payload, "embedder": mixed, "wise_ft_alpha": chosen["alpha"],
                                              "scores": chosen})
        self.final_scores = chosen
        log.info("WiSE-FT: alpha %.2f chosen on held-out classes", chosen["alpha"])

    def _fit_full(self, resume: bool) -> None:
        config = self.config
        dataset = TrainDataset([r.path for r in self.split.train], self._labels_of(self.split.train).tolist(),
                               config.image_size, config.seed)
        backbone = self.embedder.backbone
        backbone_ids = {id(p) for p in backbone.parameters()}
        other_params = [p for p in self.embedder.parameters() if id(p) not in backbone_ids]
        backbone_lr = config.lr * config.backbone_lr_scale
        groups = (layer_decay_groups(backbone, backbone_lr, config.layer_decay) if config.layer_decay < 1 else
                  [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": backbone_lr}])
        if config.l2_sp > 0:  # pulled towards the pretrained weights instead of towards zero
            for group in groups:
                group["weight_decay"] = 0.0
        groups.append({"params": other_params + list(self.criterion.parameters()), "lr": config.lr})
        l2_sp = L2SP(backbone, config.l2_sp) if config.l2_sp > 0 else None
        sampler = EpochSampler(dataset.labels, self.samples_per_class, config.seed, self.dist.rank, self.dist.world)
        drop_last = len(sampler) > config.batch_size
        steps = len(sampler) // config.batch_size if drop_last else 1
        optimizer, scheduler = self._optimizer(groups, steps)
        if resume and (self.run_dir / LAST).exists():
            self._restore(optimizer, scheduler)
        model = EmbeddingLoss(self.embedder, self.criterion)
        if self.dist.active:  # gradients averaged across ranks; each rank sees its share of the epoch
            model = nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.index is not None else None)
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        for epoch in range(self.state.epoch, config.epochs):
            started = time.time()
            seed_epoch(config.seed, epoch)
            dataset.epoch = epoch
            sampler.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=drop_last,
                                num_workers=default_workers(), pin_memory=self.device.type == "cuda")
            full_training_mode(model, self.freeze_bn)
            losses = []
            for images, labels, _, ok in tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}",
                                              disable=not self.progress, leave=False):
                images, labels = images[ok].to(self.device), labels[ok].to(self.device)
                if self.device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast_for(self.device):
                    loss = model(images, labels)
                if l2_sp is not None:
                    loss = loss + l2_sp()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.embedder.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(loss.item())
            self.embedder.eval()
            scores = (validation_scores(self._val_vectors(self.embedder, cached=False), self._val_labels())
                      if self.dist.is_main else {})
            log.info("epoch %d loss %.3f %s", epoch + 1, np.mean(losses), scores)
            if self._end_epoch(float(np.mean(losses)), scores, optimizer, scheduler, started):
                break


def default_run_name(config: TrainConfig) -> str:
    return f"{config.backbone}-{config.regime}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train one run; returns its summary (best epoch, scores, baseline, wall time)."""
    if not config.run_name:
        config.run_name = default_run_name(config)
    return Trainer(config, progress).fit(resume=resume)
