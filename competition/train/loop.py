"""Train a retrieval embedding in one of two regimes and keep what validation supports.

- last (default): the backbone is frozen and its pooled features are computed once and
  cached on disk. The default head is a learned whitening fitted in closed form; the
  loss heads (softmax, ArcFace, CosFace, triplet) train a linear projection on the cached
  features (train/last_layer.py).
- full: every layer trains, the backbone at a lower learning rate (train/full_layer.py).

Validation holds out whole landmarks and photos of the others (train/validation.py) and
compares the trained embedding with the pretrained one on the same queries; the verdict
goes into summary.json, and `compete submit` falls back to the pretrained backbone for
a run that lost on held-out landmarks.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import competition
from competition.data.discover import ImageRecord, discover_competition
from competition.distributed import Distributed, init_distributed
from competition.errors import CompeteError
from competition.io import check_plain_name, exclusive_use, fingerprint
from competition.models.embedder import Embedder, build_embedder
from competition.models.registry import get_spec, native_inputs
from competition.retrieval.embed import extract_features, pick_device
from competition.train.config import TrainConfig
from competition.train.data import TrainingData, load_training_data
from competition.train.freezing import freeze_before
from competition.train.pseudo import calibrate_threshold, pseudo_classes
from competition.train.run_folder import RunFolder
from competition.train.validation import PoolScores, score_pool

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> None:
    """Randomness inside an epoch (dropout, drop-path) from (seed, epoch): a resumed run repeats it."""
    torch.manual_seed(seed * 1_000_003 + epoch)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(competition.__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(data: TrainingData) -> dict:
    import timm
    import torchvision

    files = sorted(f"{r.name}|{r.path.stat().st_size}" for r in data.training_records())
    return {
        "git_commit": _git_commit(),
        "compete": competition.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "data_fingerprint": fingerprint(files),
        "photos": len(data.photos),
        "variants": sum(map(len, data.variants)),
        "folds": len(data.folds),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class Run:
    """Everything a regime needs: settings, data, the model, where to write."""

    config: TrainConfig
    data: TrainingData
    embedder: Embedder
    weights_origin: str
    folder: RunFolder
    device: torch.device
    dist: Distributed = field(default_factory=Distributed)
    progress: bool = True
    pseudo: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """The side of the views that are embedded (validation, features, what submit uses)."""
        return self.config.embedder_config().resolved_image_size()

    @property
    def crop_size(self) -> int:
        """The full regime's square training crops: --image-size, else the backbone's native size."""
        return self.config.image_size or native_inputs(get_spec(self.config.backbone)).size

    def cache_dir(self) -> Path:
        c = self.config
        tag = fingerprint([self.weights_origin])[:8]
        view = f"{self.image_size}" + ("-aspect" if c.embedder_config().resolved_resize() == "aspect" else "")
        return Path(c.runs_dir) / "feature-cache" / f"{c.backbone}-{tag}-{c.pooling}{c.gem_p:g}-{view}.store"

    def extract(
        self, fn, records: list[ImageRecord], description: str, cached: bool = True
    ) -> tuple[np.ndarray, list[Path]]:
        return extract_features(
            fn,
            [r.path for r in records],
            self.image_size,
            self.device,
            resize=self.config.embedder_config().resolved_resize(),
            cache_dir=self.cache_dir() if cached else None,
            batch_size=self.config.batch_size,
            description=description,
            progress=self.progress,
            workers=self.config.workers,
            precision=self.config.precision,
        )

    def pretrained_features(self, records: list[ImageRecord], description: str) -> dict[Path, np.ndarray]:
        """Pooled features of the (frozen) pretrained backbone by path, unreadable files left out."""
        vectors, failed = self.extract(self.embedder.pooled, records, description)
        unreadable = set(failed)
        return {r.path: v for r, v in zip(records, vectors) if r.path not in unreadable}

    def pool_features(self, features: dict[Path, np.ndarray], fold) -> np.ndarray:
        """The rows of `features` for a fold's validation pool, in pool order."""
        return np.stack([features[self.data.photos[i].path] for i in fold.pool])

    def baseline(self, features: dict[Path, np.ndarray], folds) -> PoolScores:
        """The pretrained backbone on every fold's validation pool: the score to beat."""
        return PoolScores.concat([self.score(self.pool_features(features, fold), fold) for fold in folds])

    def score(self, vectors: np.ndarray, fold) -> PoolScores:
        return score_pool(vectors, self.data.labels[fold.pool], fold.unseen)

    def write_config(self, **extra) -> None:
        self.folder.write_json(
            "config.json",
            {
                **self.config.to_dict(),
                "head_resolved": self.config.loss,
                "weights_origin": self.weights_origin,
                "pseudo_labels_added": self.pseudo,
                "classes": self.data.classes(),
                **extra,
                "provenance": provenance(self.data),
            },
        )

    def add_pseudo_labels(self) -> None:
        """Extra training classes from confident mutual neighbours among query/gallery photos,
        the threshold calibrated on the training landmarks (labels known, pretrained features)."""
        found = discover_competition(self.config.data, need_train=False)
        unlabeled = found.query + found.gallery
        if not unlabeled:
            log.warning("pseudo-labels need query/gallery photos; none added")
            return
        features = self.pretrained_features(self.data.photos, "calibrate")
        labelled = [r for r in self.data.photos if r.path in features]
        threshold = calibrate_threshold(
            np.stack([features[r.path] for r in labelled]), [r.label for r in labelled], self.config.pseudo_precision
        )
        if threshold is None:
            log.warning(
                "pseudo-labels: no similarity reaches precision %.2f on the training landmarks; none added",
                self.config.pseudo_precision,
            )
            return
        vectors = self.pretrained_features(unlabeled, "pseudo-labels")
        readable = [r for r in unlabeled if r.path in vectors]  # unreadable photos must not pair up
        added = pseudo_classes(readable, np.stack([vectors[r.path] for r in readable]), threshold)
        self.data.extra = added
        self.pseudo = {"threshold": threshold, "images": len(added), "classes": len({r.label for r in added})}

    def save_best(self, epoch: int, scores: dict, **extra) -> None:
        """best.pt: what `compete submit` loads (the embedder's settings and weights as they are now)."""
        self.folder.save_best(
            {
                "embedder_config": self.config.embedder_config().to_dict(),
                "embedder": self.embedder.state_dict(),
                "epoch": epoch,
                "scores": scores,
                **extra,
            }
        )

    def summary(self, started: float, comparison: dict, baseline: PoolScores, best: dict, **extra) -> dict:
        summary = {
            "run": self.config.run_name,
            "regime": self.config.regime,
            "head": self.config.loss,
            "landmarks": self.config.landmarks,
            **extra,
            "validation": comparison,
            "best": best,
            "baseline": baseline.means(),
            "beats_pretrained": {g: c["beats"] for g, c in comparison.items()},
            "skipped_files": self.data.skipped,
            "wall_seconds": round(time.time() - started, 1),
        }
        self.folder.write_json("summary.json", summary)
        return summary


def prepare_run(config: TrainConfig, progress: bool = True) -> Run:
    dist = init_distributed()
    root = Path(config.data)
    augmented = Path(config.augmented) if config.augmented else root / "augmented"
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
    )
    seed_everything(config.seed)
    embedder, origin = build_embedder(config.embedder_config())
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
        run.add_pseudo_labels()
    return run


def default_run_name(config: TrainConfig) -> str:
    return f"{config.backbone}-{config.regime}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train one run; returns its summary (validation against the pretrained backbone, wall time)."""
    from competition.train.full_layer import FullLayerTrainer
    from competition.train.last_layer import fit_last_layer

    if not config.run_name:
        config.run_name = default_run_name(config)
    check_plain_name(config.run_name, "run name", "--runs-dir")
    started = time.time()
    folder = RunFolder(Path(config.runs_dir) / config.run_name)
    # One process writes a run folder: a second `train --name same` stops at once (rank 0 holds it under torchrun).
    held = exclusive_use(folder.path, "run") if init_distributed().is_main else contextlib.nullcontext()
    with held:
        if folder.finished and not resume:
            raise CompeteError(f"{folder.path} already exists: pick another --name, or --resume to continue it")
        run = prepare_run(config, progress)
        if config.regime == "last":
            if not run.dist.is_main:  # seconds of work on cached features: rank 0 does it alone
                return {"run": config.run_name, "rank": run.dist.rank}
            return fit_last_layer(run, started)
        return FullLayerTrainer(run).fit(started, resume)
