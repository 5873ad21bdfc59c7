"""What a run trains and validates on: readable original photos, their augmented
variants, optional pseudo-labelled photos, and the validation folds over landmarks.

Validation pools hold original photos only; a held-out photo's augmented variants never
train in that fold (that would leak the photo).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from competition.augment.generate import MANIFEST
from competition.data.checks import cross_class_duplicates, readable_records, require_every_class
from competition.data.discover import ImageRecord, training_photos
from competition.errors import CompeteError
from competition.train.folds import Fold, class_folds


@dataclass
class TrainingData:
    photos: list[ImageRecord]  # readable original training photos; folds index into this list
    variants: list[list[ImageRecord]]  # augmented variants of each photo, in the same order
    folds: list[Fold]  # what the run is validated on: closed_folds for --landmarks known, else mixed_folds
    mixed_folds: list[Fold]  # each holds out landmarks whole and photos of the others
    closed_folds: list[Fold]  # each holds out photos of every landmark (closed-set queries)
    skipped: list[str] = field(default_factory=list)  # unreadable photos, one message each
    extra: list[ImageRecord] = field(default_factory=list)  # pseudo-labelled photos: always train, never validate

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.photos], dtype=object)

    def training_records(self, indices: np.ndarray | None = None) -> list[ImageRecord]:
        """The photos at `indices` (default: all), each followed by its variants, then the extra photos."""
        chosen = range(len(self.photos)) if indices is None else indices.tolist()
        return [record for i in chosen for record in (self.photos[i], *self.variants[i])] + self.extra

    def classes(self) -> list[str]:
        return sorted({r.label for r in self.photos + self.extra})


def augmented_variants(augmented_dir: Path) -> dict[str, list[Path]]:
    """Map each source photo ('train/<class>/<file>') to its augmented files, via the manifest.

    A folder with photos but no manifest (an augment killed before writing it) is an error:
    which photo each variant came from is unknown, and a held-out photo's copies could train."""
    manifest = augmented_dir / MANIFEST
    variants: dict[str, list[Path]] = defaultdict(list)
    if not manifest.exists():
        if any(p.is_file() and p.suffix != ".json" for p in augmented_dir.rglob("*")):
            raise CompeteError(
                f"{augmented_dir} has no {MANIFEST} (an interrupted compete augment?): run the same "
                "augment command again to finish it, or --no-augmented"
            )
        return variants
    with open(manifest, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            output = augmented_dir / row["output"]
            if output.exists():
                variants[Path(row["source"]).as_posix()].append(output)
    return variants


def at_most_per_landmark(records: list[ImageRecord], most: int, seed: int) -> list[ImageRecord]:
    """At most `most` photos of each landmark, a seeded sample in the records' order (0: all), chosen
    before any photo is opened: GLDv2-clean's 1.58M photos are mostly in landmarks with dozens."""
    if not most:
        return records
    by_landmark: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_landmark[record.label].append(index)
    rng = np.random.default_rng(seed)
    kept = [i for rows in by_landmark.values() for i in (rows if len(rows) <= most else rng.choice(rows, most, False))]
    return [records[i] for i in sorted(kept)]


def load_training_data(
    root: Path,
    augmented: Path | None,
    folds: int,
    photo_share: float,
    seed: int,
    strict: bool = False,
    landmarks: str = "auto",
    photos_per_landmark: int = 0,
) -> TrainingData:
    found = at_most_per_landmark(training_photos(root), photos_per_landmark, seed)
    cross_class_duplicates(found)
    photos, skipped = readable_records(found, strict=strict)
    require_every_class(found, photos)
    classes = len({r.label for r in photos})
    if classes < 2:
        raise CompeteError(f"{root / 'train'}: need at least 2 training classes, found {classes}")
    by_source = augmented_variants(augmented) if augmented is not None else {}
    variants = [
        [ImageRecord(path, f"{r.name}#{path.name}", "augmented", r.label) for path in by_source.get(r.key, [])]
        for r in photos
    ]
    labels = [r.label for r in photos]
    mixed = class_folds(labels, folds, seed, photo_share)
    closed = class_folds(labels, folds, seed, photo_share, hold_out_landmarks=False)
    return TrainingData(photos, variants, closed if landmarks == "known" else mixed, mixed, closed, skipped)
