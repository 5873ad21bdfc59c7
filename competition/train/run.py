"""A training run in memory: its settings, data, model and folder, and what both regimes do
with them (features of the frozen backbone, validation scores, the files a run writes)."""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

import competition
from competition.data.discover import ImageRecord
from competition.data.features import is_feature_row
from competition.distributed import Distributed
from competition.io import fingerprint
from competition.models.embedder import Embedder
from competition.models.pooling import learned
from competition.models.view import model_view
from competition.retrieval.embed import Extraction, extract_features
from competition.runs import CONFIG, SUMMARY, features_cache
from competition.settings.model import View
from competition.settings.train import TrainConfig
from competition.train.data import TrainingData
from competition.train.photo_features import PhotoFeatures
from competition.train.record import run_record
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

    files = sorted(f"{r.name}|{_size(r.path)}" for r in data.training_records())
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
        "pool_photos": [len(fold.pool) for fold in data.folds],  # at most POOL_MOST each: past it, drawn
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _size(path: Path) -> int:
    """A photo's size; a features folder's row counts as its file's."""
    return (path.parent if is_feature_row(path) else path).stat().st_size


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

    @cached_property
    def view(self) -> View:
        """How photos are embedded for validation and features: the model's own view, one of it."""
        return model_view(self.config.model, device=self.device, precision=self.config.precision)

    def cache_dir(self) -> Path:
        return features_cache(self.config.runs_dir, self.config.model, self.weights_origin, self.view)

    def extract(
        self, fn, records: list[ImageRecord], description: str, cached: bool = True
    ) -> tuple[np.ndarray, list[Path]]:
        return extract_features(
            fn,
            [r.path for r in records],
            self.view,
            self.device,
            cache_dir=self.cache_dir() if cached else None,
            how=Extraction(
                batch_size=self.config.batch_size,
                description=f"{self.config.run_name}: {description}",  # piped lines name their run
                progress=self.progress,
                workers=self.config.workers,
                rows_dtype=np.float16,  # a features folder's rows as stored: 1.58M x 1280 in 4 GB, not 8
            ),
        )

    def pretrained_features(self, records: list[ImageRecord], description: str) -> PhotoFeatures:
        """Pooled features of the (frozen) pretrained backbone, unreadable files left out.
        A pooling fitted to this run's photos (NetVLAD) is not the backbone's alone: never cached."""
        cached = not learned(self.embedder.pooling)
        vectors, failed = self.extract(self.embedder.pooled, records, description, cached)
        return PhotoFeatures.of(records, vectors, set(failed))

    def pool_features(self, features: PhotoFeatures, fold) -> np.ndarray:
        """The float32 rows of `features` for a fold's validation pool, in pool order."""
        return features.rows([self.data.photos[i] for i in fold.pool])[0].whole()

    def baseline(self, features: PhotoFeatures, folds) -> PoolScores:
        """The pretrained backbone on every fold's validation pool: the score to beat."""
        return PoolScores.concat([self.score(self.pool_features(features, fold), fold) for fold in folds])

    def embedder_scores(self, records: list[ImageRecord], fold) -> PoolScores:
        """The embedder as it is now on a fold's validation pool."""
        self.embedder.eval()
        vectors, _ = self.extract(self.embedder, records, "validation", cached=False)
        return self.score(vectors, fold)

    def score(self, vectors: np.ndarray, fold) -> PoolScores:
        return score_pool(vectors, self.data.labels[fold.pool], fold.unseen)

    def write_config(self, **extra) -> None:
        self.folder.write_json(
            CONFIG,
            {
                **self.config.to_dict(),
                "head_resolved": self.config.head_resolved,
                "weights_origin": self.weights_origin,
                "pseudo_labels_added": self.pseudo,
                "classes": self.data.classes(),
                **extra,
                "provenance": provenance(self.data),
            },
        )

    def save_best(self, epoch: int, scores: dict, **extra) -> None:
        """best.pt: what `compete submit` loads (the embedder's settings and weights as they are now)."""
        self.folder.save_best(
            {
                "model": self.config.model.to_dict(),
                "projection": self.config.projection,
                "embedder": self.embedder.state_dict(),
                "epoch": epoch,
                "scores": scores,
                **extra,
            }
        )

    def summary(
        self,
        started: float,
        comparison: dict,
        baseline: PoolScores,
        best: dict,
        label_fusion: dict | None = None,
        postprocess: dict | None = None,
        **extra,
    ) -> dict:
        """summary.json, written last: the run's record (what submit and describe read) and the
        report around it (validation's scores and intervals, what the folds chose and why)."""
        label_fusion, postprocess = label_fusion or {}, postprocess or {}
        record = run_record(self.config, self.weights_origin, comparison, label_fusion, postprocess)
        summary = {
            "run": self.config.run_name,
            "record": record.to_dict(),
            **extra,
            "validation": comparison,
            # the classifier's kind and the chosen steps are the record's: written there alone
            "label_fusion": {k: v for k, v in label_fusion.items() if k != "classifier"},
            "postprocess": {k: v for k, v in postprocess.items() if k != "steps"},
            "best": best,
            "baseline": baseline.means(),
            "skipped_files": self.data.skipped,
            "wall_seconds": round(time.time() - started, 1),
        }
        self.folder.write_json(SUMMARY, summary)
        if self.folder.tracker is not None:
            best_scores = {f"best_{key}": value for key, value in best.items()}
            self.folder.tracker.outcome(best_scores, "val", summary.get("best_epoch") or 0)
        return summary
