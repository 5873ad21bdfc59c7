"""Turn a competition folder into records: which photo, which class (if known), which split.

Two layouts of photos (see data/README.md)::

    compete (default)                      glr (Google Landmark Retrieval, detected)
    <root>/train/<class>/<photo>           <root>/train.csv  id,landmark_id
    <root>/query/**/<photo>                <root>/train/a/b/c/<id>.jpg
    <root>/gallery/**/<photo>              <root>/test/a/b/c/<id>.jpg    (the queries)
    <root>/labels.csv  (optional)          <root>/index/a/b/c/<id>.jpg   (the gallery)

A third, `features` (detected by its features.json), holds rows of features computed
elsewhere instead of photos (data/features.py).

Query and gallery photos may sit in sub-folders; a photo's name is its path inside its
split folder. A file that is skipped (not an image, hidden, a listed photo missing on disk)
is named and counted in `Competition.skipped`, never dropped silently.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from competition.data.features import check_widths, is_features_folder, read_split, row_paths
from competition.data.images import is_image_file
from competition.errors import CompeteError

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "compete", "glr", "features")
GLR_FOLDERS = {"query": "test", "gallery": "index"}
_JUNK_DIRS = {"__MACOSX", ".ipynb_checkpoints"}


def natural_key(label: str) -> tuple:
    """Numeric landmark ids (Google Landmarks: 9, 10, 138982) in numeric order, names after them."""
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


@dataclass(frozen=True)
class ImageRecord:
    path: Path  # absolute path on disk
    name: str  # id inside its split: "q_0001.jpg" or "sub/q.jpg" for query/gallery, "<class>/x.jpg" for train
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
    layout: str = "compete"
    skipped: list[str] = field(default_factory=list)  # "path: why", for every file left out

    @property
    def train_classes(self) -> list[str]:
        return sorted({r.label for r in self.train if r.label is not None}, key=natural_key)

    @property
    def has_eval_labels(self) -> bool:
        return bool(self.query) and all(r.label is not None for r in self.query + self.gallery)

    @property
    def has_partial_labels(self) -> bool:
        return any(r.label is not None for r in self.query + self.gallery) and not self.has_eval_labels

    def label_coverage(self) -> str:
        photos = self.query + self.gallery
        unlabelled = [r.key for r in photos if r.label is None]
        return (
            f"{len(photos) - len(unlabelled)} of {len(photos)} query/gallery photos (without a class: "
            f"{', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''})"
        )


def _is_junk(path: Path, top: Path) -> bool:
    return any(part.startswith(".") or part in _JUNK_DIRS for part in path.relative_to(top).parts)


def nfc(text: str) -> str:
    """Names compared in one Unicode form: a folder copied from macOS spells 'é' as e + accent
    (NFD) where labels.csv has one character (NFC), and the two must be the same landmark."""
    return unicodedata.normalize("NFC", text)


def _image_files(folder: Path, recursive: bool = False, skipped: list[str] | None = None) -> list[Path]:
    """Photos in `folder` (and below it when `recursive`), sorted by relative path; anything
    else that is not hidden or junk is reported in `skipped`."""
    found = []
    for path in folder.rglob("*") if recursive else folder.iterdir():
        if not path.is_file() or _is_junk(path, folder):
            continue
        if is_image_file(path):
            found.append(path)
        elif skipped is not None:
            skipped.append(f"{path}: not a photo compete reads (extension {path.suffix or 'none'})")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _class_dirs(train_dir: Path) -> list[Path]:
    return sorted(
        p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _JUNK_DIRS
    )


SAMPLE_DATA = Path("data/sample")  # every command's default --data
SPLIT_FOLDERS = ("train", "query", "gallery", "index", "test")


def _is_a_split(root: Path) -> bool:
    """--data at train/ (or query/...) instead of the folder above it: a common slip."""
    inside = ("train", "query", "gallery")  # a competition folder named train/ holds these
    return root.name in SPLIT_FOLDERS and root.is_dir() and not any((root / s).is_dir() for s in inside)


def missing_folder(root: Path, folder: Path) -> str:
    """Why `folder` of the competition at `root` is not there: the likely mistake and its fix."""
    if _is_a_split(root):
        return (
            f"{root} is the {root.name}/ folder itself: --data takes the competition folder that holds train/, "
            f"query/ and gallery/ (here --data {root.parent})"
        )
    if root == SAMPLE_DATA and not root.exists():
        return (
            f"{root}: the embedded landmark set is not there yet (no --data was given): make it with "
            "`compete sample-data`, or give --data <your competition folder>"
        )
    if not root.is_dir():
        return f"{root}: competition folder not found"
    return f"{folder}: training folder not found (expected train/<class>/<photo>)"


def discover_train(train_dir: Path) -> list[ImageRecord]:
    """One record per photo in train/<class>/; a class folder with no photo is an error."""
    if not train_dir.is_dir():
        raise CompeteError(missing_folder(train_dir.parent, train_dir))
    records: list[ImageRecord] = []
    empty: list[str] = []
    for class_dir in _class_dirs(train_dir):
        files = _image_files(class_dir)
        if not files:
            empty.append(class_dir.name)
        label = nfc(class_dir.name)
        records += [ImageRecord(f.resolve(), f"{class_dir.name}/{f.name}", "train", label) for f in files]
    if empty:
        raise CompeteError(f"{train_dir}: class folder(s) with no image: {', '.join(empty)}")
    if not records:
        raise CompeteError(f"{train_dir}: no class folders with images (expected train/<class>/<photo>)")
    stray = _image_files(train_dir)
    if stray:
        log.warning("%s: ignoring %d image(s) outside any class folder", train_dir, len(stray))
    return records


def glr_photo(root: Path, folder: str, photo_id: str) -> Path:
    """Where Google Landmarks keeps a photo: <folder>/a/b/c/abc....jpg (its id's first three characters)."""
    return root / folder / photo_id[0] / photo_id[1] / photo_id[2] / f"{photo_id}.jpg"


def discover_glr_train(root: Path, skipped: list[str] | None = None) -> list[ImageRecord]:
    """Training photos listed in train.csv (id, landmark_id); listed photos missing on disk are skipped."""
    csv_file = root / "train.csv"
    try:
        table = pd.read_csv(csv_file, dtype=str, keep_default_na=False, usecols=["id", "landmark_id"])
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CompeteError(f"{csv_file}: expected columns id,landmark_id ({error})") from error
    records, missing = [], []
    for photo_id, landmark in zip(table["id"], table["landmark_id"]):
        path = glr_photo(root, "train", photo_id) if len(photo_id) >= 3 else root / "train" / f"{photo_id}.jpg"
        if path.is_file():
            records.append(ImageRecord(path.resolve(), f"{landmark}/{path.name}", "train", nfc(landmark)))
        else:
            missing.append(f"{path}: listed in train.csv but not on disk")
    if missing:
        log.warning("%s: %d listed photo(s) not on disk, skipped; first: %s", csv_file, len(missing), missing[0])
        if skipped is not None:
            skipped += missing
    if not records:
        raise CompeteError(f"{csv_file}: none of its photos are under {root / 'train'}/a/b/c/<id>.jpg")
    return records


def detect_layout(root: Path, layout: str = "auto") -> str:
    if layout not in LAYOUTS:
        raise CompeteError(f"layout must be one of {LAYOUTS}, not '{layout}'")
    if layout != "auto":
        return layout
    if is_features_folder(root):
        return "features"
    glr = (root / "train.csv").is_file() and (root / "index").is_dir() and not (root / "gallery").is_dir()
    return "glr" if glr else "compete"


def training_photos(root: str | Path, layout: str = "auto") -> list[ImageRecord]:
    """The labelled training photos of either layout."""
    root = Path(root)
    layout = detect_layout(root, layout)
    if layout == "features":
        records = _feature_records(root, "train")
        if not records:
            raise CompeteError(f"{root}: its features have no train split (train.npy, train.csv)")
        return records
    return discover_glr_train(root) if layout == "glr" else discover_train(root / "train")


def _feature_records(root: Path, split: str) -> list[ImageRecord]:
    """A features folder's split (data/features.py): one record per row, named by its id."""
    ids, labels = read_split(root, split)
    return [ImageRecord(path, i, split, label) for path, i, label in zip(row_paths(root, split, len(ids)), ids, labels)]


def _discover_split(folder: Path, split: str, skipped: list[str]) -> list[ImageRecord]:
    if not folder.is_dir():
        return []
    return [
        ImageRecord(f.resolve(), f.relative_to(folder).as_posix(), split)
        for f in _image_files(folder, recursive=True, skipped=skipped)
    ]


def read_labels(labels_csv: Path) -> dict[str, str]:
    """Map 'query/x.jpg' / 'gallery/y.jpg' to a class, checking the file is well formed.

    A blank class would merge landmarks: refused. Spaces around a name are removed, with a
    warning (they would make every query of that landmark "unseen")."""
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CompeteError(f"{labels_csv}: cannot parse as CSV ({error})") from error
    table.columns = [str(c).strip() for c in table.columns]
    missing = {"image", "class"} - set(table.columns)
    if missing:
        raise CompeteError(f"{labels_csv}: missing column(s) {sorted(missing)}; expected 'image,class'")
    blank = [
        f"row {i + 2} ({image})"
        for i, (image, label) in enumerate(zip(table["image"], table["class"]))
        if not label.strip()
    ]
    if blank:
        raise CompeteError(f"{labels_csv}: blank class in {len(blank)} row(s): {', '.join(blank[:5])}")
    padded = [
        f"row {i + 2}"
        for i, (image, label) in enumerate(zip(table["image"], table["class"]))
        if image != image.strip() or label != label.strip()
    ]
    if padded:
        log.warning("%s: removed spaces around names in %d row(s): %s", labels_csv, len(padded), ", ".join(padded[:5]))
        table["image"], table["class"] = table["image"].str.strip(), table["class"].str.strip()
    duplicated = table["image"][table["image"].duplicated()].tolist()
    if duplicated:
        raise CompeteError(f"{labels_csv}: image(s) listed twice: {', '.join(duplicated[:5])}")
    labels = {}
    for name, label in zip(table["image"], table["class"]):
        # judged by the name, not where it resolves: query/ or gallery/ may be symlinks to elsewhere
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CompeteError(f"{labels_csv}: path escapes the competition folder: {name}")
        top, *rest = Path(name).parts or ("",)
        split = {folder: split for split, folder in GLR_FOLDERS.items()}.get(top, top)  # test/ = query/ in GLR
        if split not in ("query", "gallery"):
            raise CompeteError(f"{labels_csv}: image must be under query/ or gallery/: {name}")
        labels[nfc(Path(split, *rest).as_posix())] = nfc(label)
    return labels


def discover_competition(root: str | Path, need_train: bool = True, layout: str = "auto") -> Competition:
    """Read a competition folder; labels are attached to query/gallery when labels.csv exists."""
    root = Path(root)
    if not root.is_dir() or _is_a_split(root):
        raise CompeteError(missing_folder(root, root))
    layout = detect_layout(root, layout)
    competition = Competition(root=root.resolve(), layout=layout)
    if layout == "features":  # rows, not photos: ids and labels come with them
        check_widths(root)
        competition.train = training_photos(root, layout) if need_train else _feature_records(root, "train")
        competition.query, competition.gallery = (_feature_records(root, s) for s in ("query", "gallery"))
        return competition
    skipped = competition.skipped
    if layout == "glr":
        competition.train = discover_glr_train(root, skipped)
    elif need_train or (root / "train").is_dir():
        competition.train = discover_train(root / "train")
    folders = GLR_FOLDERS if layout == "glr" else {"query": "query", "gallery": "gallery"}
    query = _discover_split(root / folders["query"], "query", skipped)
    gallery = _discover_split(root / folders["gallery"], "gallery", skipped)
    if query and not gallery:
        raise CompeteError(f"{root}: has query images but no {folders['gallery']}/ images to search")
    labels_csv = root / "labels.csv"
    if labels_csv.exists():
        labels = read_labels(labels_csv)
        known = {nfc(r.key) for r in query + gallery}
        unknown = sorted(set(labels) - known)
        if unknown:
            raise CompeteError(f"{labels_csv}: names not found on disk: {', '.join(unknown[:5])}")
        query = [ImageRecord(r.path, r.name, r.split, labels.get(nfc(r.key))) for r in query]
        gallery = [ImageRecord(r.path, r.name, r.split, labels.get(nfc(r.key))) for r in gallery]
    competition.query, competition.gallery = query, gallery
    if skipped:
        log.warning("%s: %d file(s) skipped; first: %s", root, len(skipped), skipped[0])
    return competition
