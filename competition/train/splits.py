"""Validation that looks like the test: whole held-out classes and held-out photos.

Held-out classes stand for landmarks the model will meet only at test time; held-out
photos of training classes stand for new views of known landmarks. Augmented variants
of a held-out photo never reach training (that would leak the photo).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.augment.generate import MANIFEST
from competition.data.discover import ImageRecord


@dataclass
class Split:
    train: list[ImageRecord]  # originals + augmented variants of training photos
    val_seen: list[ImageRecord]  # held-out photos of training classes
    val_unseen: list[ImageRecord]  # every photo of held-out classes
    classes: list[str]  # training classes, index = label id

    def summary(self) -> dict:
        return {"train_images": len(self.train), "val_seen_images": len(self.val_seen),
                "val_unseen_images": len(self.val_unseen), "train_classes": len(self.classes),
                "unseen_classes": len({r.label for r in self.val_unseen})}


def split_records(records: list[ImageRecord], holdout_classes: float, holdout_images: float, seed: int
                  ) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    rng = np.random.default_rng([seed, 4242])
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    classes = sorted(by_class)
    # Keep at least 2 training classes; hold classes out only when there are enough.
    n_out = min(int(round(holdout_classes * len(classes))), max(len(classes) - 2, 0))
    unseen = set(rng.permutation(classes)[:n_out].tolist())
    train, val_seen, val_unseen = [], [], []
    for label in classes:
        photos = by_class[label]
        if label in unseen:
            val_unseen += photos
            continue
        # A class needs >= 3 photos to lend one to validation and keep two for training.
        n_val = min(int(round(holdout_images * len(photos))), max(len(photos) - 2, 0))
        order = rng.permutation(len(photos))
        val_seen += [photos[i] for i in sorted(order[:n_val])]
        train += [photos[i] for i in sorted(order[n_val:])]
    return train, val_seen, val_unseen


def augmented_variants(augmented_dir: Path, root: Path) -> dict[str, list[Path]]:
    """Map each source photo ('train/<class>/<file>') to its augmented files, via the manifest."""
    manifest = augmented_dir / MANIFEST
    variants: dict[str, list[Path]] = defaultdict(list)
    if not manifest.exists():
        return variants
    with open(manifest, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            output = augmented_dir / row["output"]
            if output.exists():
                variants[Path(row["source"]).as_posix()].append(output)
    return variants


def make_split(records: list[ImageRecord], root: Path, augmented_dir: Path | None, holdout_classes: float,
               holdout_images: float, seed: int) -> Split:
    train, val_seen, val_unseen = split_records(records, holdout_classes, holdout_images, seed)
    if augmented_dir is not None:
        variants = augmented_variants(augmented_dir, root)
        train = train + [ImageRecord(path, f"{r.name}#{path.name}", "augmented", r.label)
                         for r in train for path in variants.get(r.key, [])]
    return Split(train, val_seen, val_unseen, sorted({r.label for r in train}))
