"""Turn a competition folder into records: which photo, which class (if known), which split.

Layout (see data/README.md)::

    <root>/train/<class>/<photo>     labelled training photos, one folder per class
    <root>/query/<photo>             photos to find matches for
    <root>/gallery/<photo>           photos to search in
    <root>/labels.csv                optional: image,class for query and gallery photos
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from competition.data.images import is_image_file
from competition.errors import CompeteError

log = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
_JUNK_DIRS = {"__MACOSX", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class ImageRecord:
    path: Path  # absolute path on disk
    name: str  # id inside its split: "q_0001.jpg" for query/gallery, "<class>/x.jpg" for train
    split: str
    label: str | None = None

    @property
    def key(self) -> str:
        """The photo's path relative to the competition root, as labels.csv names it."""
        return f"{self.split}/{self.name}"


@dataclass
class Competition:
    root: Path
    train: list[ImageRecord] = field(default_factory=list)
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)

    @property
    def train_classes(self) -> list[str]:
        return sorted({r.label for r in self.train if r.label is not None})

    @property
    def has_eval_labels(self) -> bool:
        return bool(self.query) and all(r.label is not None for r in self.query + self.gallery)


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: p.name)


def _class_dirs(train_dir: Path) -> list[Path]:
    return sorted(
        p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _JUNK_DIRS
    )


def discover_train(train_dir: Path) -> list[ImageRecord]:
    """One record per photo in train/<class>/; a class folder with no photo is an error."""
    if not train_dir.is_dir():
        raise CompeteError(f"{train_dir}: training folder not found (expected train/<class>/<photo>)")
    records: list[ImageRecord] = []
    empty: list[str] = []
    for class_dir in _class_dirs(train_dir):
        files = _image_files(class_dir)
        if not files:
            empty.append(class_dir.name)
        records += [ImageRecord(f.resolve(), f"{class_dir.name}/{f.name}", "train", class_dir.name) for f in files]
    if empty:
        raise CompeteError(f"{train_dir}: class folder(s) with no image: {', '.join(empty)}")
    if not records:
        raise CompeteError(f"{train_dir}: no class folders with images (expected train/<class>/<photo>)")
    stray = _image_files(train_dir)
    if stray:
        log.warning("%s: ignoring %d image(s) outside any class folder", train_dir, len(stray))
    return records


def _discover_flat(folder: Path, split: str) -> list[ImageRecord]:
    if not folder.is_dir():
        return []
    return [ImageRecord(f.resolve(), f.name, split) for f in _image_files(folder)]


def read_labels(labels_csv: Path, root: Path) -> dict[str, str]:
    """Map 'query/x.jpg' / 'gallery/y.jpg' to a class, checking the file is well formed."""
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CompeteError(f"{labels_csv}: cannot parse as CSV ({error})") from error
    missing = {"image", "class"} - set(table.columns)
    if missing:
        raise CompeteError(f"{labels_csv}: missing column(s) {sorted(missing)}; expected 'image,class'")
    duplicated = table["image"][table["image"].duplicated()].tolist()
    if duplicated:
        raise CompeteError(f"{labels_csv}: image(s) listed twice: {', '.join(duplicated[:5])}")
    root = root.resolve()
    for name in table["image"]:
        resolved = (root / name).resolve()
        if not resolved.is_relative_to(root):
            raise CompeteError(f"{labels_csv}: path escapes the competition folder: {name}")
        if Path(name).parts[:1] not in (("query",), ("gallery",)):
            raise CompeteError(f"{labels_csv}: image must be under query/ or gallery/: {name}")
    return dict(zip(table["image"], table["class"]))


def discover_competition(root: str | Path, need_train: bool = True) -> Competition:
    """Read a competition folder; labels are attached to query/gallery when labels.csv exists."""
    root = Path(root)
    if not root.is_dir():
        raise CompeteError(f"{root}: competition folder not found")
    competition = Competition(root=root.resolve())
    if need_train or (root / "train").is_dir():
        competition.train = discover_train(root / "train")
    query = _discover_flat(root / "query", "query")
    gallery = _discover_flat(root / "gallery", "gallery")
    if query and not gallery:
        raise CompeteError(f"{root}: has query images but no gallery/ images to search")
    labels_csv = root / "labels.csv"
    if labels_csv.exists():
        labels = read_labels(labels_csv, root)
        known = {r.key for r in query + gallery}
        unknown = sorted(set(labels) - known)
        if unknown:
            raise CompeteError(f"{labels_csv}: names not found on disk: {', '.join(unknown[:5])}")
        query = [ImageRecord(r.path, r.name, r.split, labels.get(r.key)) for r in query]
        gallery = [ImageRecord(r.path, r.name, r.split, labels.get(r.key)) for r in gallery]
    competition.query, competition.gallery = query, gallery
    return competition
