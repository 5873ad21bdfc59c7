"""Features computed elsewhere, standing in for photos: a folder that train and submit read as
they read a competition folder, each photo a row of a matrix::

    <root>/features.json                what computed each split's rows (its identity, below)
    <root>/train.npy    train.csv       n x d float16 rows; id,landmark
    <root>/query.npy    query.csv       rows; id and, when known, landmark
    <root>/gallery.npy  gallery.csv     rows; id and, when known, landmark

`compete features` writes one from a photo folder (on a GPU machine, say), so `compete train`
(last-layer regime) and `compete submit` run where the photos are not: GLDv2's 2.5M photos
take days to embed on a CPU, their float16 features of lite0 about 6 GB. A split's identity
is the name of the feature cache its rows would have here (backbone, weights, pooling and
view: runs.features_cache), so a row serves only the model whose pooled features it is.

A row's record has the path `<root>/<split>.npy/<row>`, which no photo can have:
retrieval/embed.py reads such rows from the file instead of decoding a photo.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from competition.errors import CompeteError
from competition.io import atomic_path, atomic_write_json, counted, foreign_files, mark_written

log = logging.getLogger(__name__)

FEATURES_META = "features.json"
SPLITS = ("train", "query", "gallery")


def is_feature_row(path: Path) -> bool:
    """A record's path that names a row of a features file, not a photo."""
    return path.parent.suffix == ".npy" and path.name.isdigit()


def is_features_folder(root: Path) -> bool:
    return (root / FEATURES_META).is_file()


def read_meta(root: Path) -> dict:
    path = root / FEATURES_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        splits = meta["splits"]
        if not isinstance(splits, dict) or not all(isinstance(s.get("features"), str) for s in splits.values()):
            raise TypeError("each split needs its 'features' identity")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CompeteError(f"{path}: not a features description ({error}); write it with `compete features`") from error
    return meta


def read_split(root: Path, split: str) -> tuple[list[str], list[str | None]]:
    """A split's ids and landmarks (None where not known), checked against its rows; ([], []) when absent."""
    meta = read_meta(root)
    if split not in meta["splits"]:
        return [], []
    table_file, rows_file = root / f"{split}.csv", root / f"{split}.npy"
    try:
        table = pd.read_csv(table_file, dtype=str, keep_default_na=False)
        rows = np.load(rows_file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CompeteError(f"{root}: cannot read the {split} features ({error})") from error
    if "id" not in table.columns:
        raise CompeteError(f"{table_file}: needs an 'id' column (and 'landmark' for train)")
    if rows.ndim != 2 or len(rows) != len(table):
        raise CompeteError(f"{rows_file}: {rows.shape} rows for the {len(table)} ids of {table_file}")
    if bad := [repr(i) for i in table["id"] if not _plain_id(i)][:5]:
        raise CompeteError(
            f"{table_file}: ids must be relative names (not blank, no '..', '.', \\ or leading /): {', '.join(bad)}"
        )
    if table["id"].duplicated().any():
        raise CompeteError(f"{table_file}: id(s) listed twice: {', '.join(table['id'][table['id'].duplicated()][:5])}")
    labels = table["landmark"].tolist() if "landmark" in table.columns else [""] * len(table)
    if split == "train" and not all(labels):
        raise CompeteError(f"{table_file}: every training row needs its landmark")
    return table["id"].tolist(), [label or None for label in labels]


def _plain_id(name: str) -> bool:
    """An id as a photo's name under its split: it reaches the submission file, so nothing that climbs or is blank."""
    return bool(name.strip()) and "\\" not in name and all(part not in ("", ".", "..") for part in name.split("/"))


def row_paths(root: Path, split: str, rows: int) -> list[Path]:
    """The paths naming a split's first `rows` rows, its folder resolved once (2.46M resolutions,
    one per row of GLDv2's three splits, took 35 s of every train and submit)."""
    stored = root.resolve() / f"{split}.npy"
    return [stored / str(row) for row in range(rows)]


ROWS_AT_ONCE = 65_536  # rows read, checked and converted at once: 1.58M float16 rows are never doubled


def read_rows(paths: list[Path], identity: str | None, dtype=np.float32) -> np.ndarray:
    """The rows that `paths` name (is_feature_row), as `dtype` (float16 keeps them as stored, half
    the memory), each file's identity checked against `identity`, the feature cache of the model
    asking (None: a model whose features are not its pretrained backbone's pooling, which only
    photos can feed). Read a block at a time from the memory-mapped file."""
    files: dict[Path, list[int]] = {}
    for index, path in enumerate(paths):
        files.setdefault(path.parent, []).append(index)
    out: np.ndarray | None = None
    for rows_file, indices in files.items():
        split = rows_file.stem
        have = read_meta(rows_file.parent)["splits"].get(split, {}).get("features")
        if identity != have:
            raise CompeteError(
                f"{rows_file}: features of {have}, not of this model ({identity or 'uncached'}): they serve a backbone "
                "name or a last-layer run at the settings they were written with; write them again with `compete "
                "features` and this model's settings, or give the photos (a full-regime run needs them: it "
                "fine-tuned its backbone)"
            )
        count, width = np.load(rows_file, mmap_mode="r", allow_pickle=False).shape
        wanted_rows = np.array([int(paths[i].name) for i in indices])
        if wanted_rows.max() >= count:
            raise CompeteError(f"{rows_file}: has {count} rows, row {wanted_rows.max()} asked for")
        if out is None:
            out = np.empty((len(paths), width), dtype)
        targets, zero = np.array(indices), 0
        # mapped anew for each block and let go: a mapping kept open holds every page read (4 GB at 1.58M rows)
        for start in range(0, len(wanted_rows), ROWS_AT_ONCE):
            block = slice(start, start + ROWS_AT_ONCE)
            mapped = np.load(rows_file, mmap_mode="r", allow_pickle=False)
            read = _checked(rows_file, wanted_rows[block], mapped[wanted_rows[block]])
            del mapped
            out[targets[block]] = read
            zero += int((~read.any(axis=1)).sum())  # compete's mark for a photo that did not decode
        if zero:
            log.warning("%s: %s all zero (photos that did not decode where the features were written): ranked last",
                        rows_file, counted(zero, "row"))  # fmt: skip
    return out if out is not None else np.empty((0, 0), dtype)


def _checked(rows_file: Path, numbers: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows that can rank: a NaN or an infinity is named by file and row (it came with the folder,
    no pooling here made it)."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        first = int(numbers[np.argmin(finite)])
        raise CompeteError(f"{rows_file}, row {first}: not finite (NaN or infinity); write the features again")
    return rows


def check_widths(root: Path) -> None:
    """Every split's rows of one width: query rows of 1280 numbers cannot be searched among gallery rows of 512."""
    widths = {}
    for split in read_meta(root)["splits"]:
        try:
            widths[split] = np.load(root / f"{split}.npy", mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as error:
            raise CompeteError(f"{root}: cannot read the {split} features ({error})") from error
    if len({shape[1:] for shape in widths.values()}) > 1:
        raise CompeteError(
            f"{root}: the splits' rows differ in width ("
            + ", ".join(f"{split}.npy {shape}" for split, shape in widths.items())
            + "): write them with one model"
        )


def write_split(root: Path, split: str, ids: list[str], labels: list[str | None], vectors: np.ndarray) -> None:
    """One split's rows and ids, each file written whole or not at all (the description last)."""
    if split not in SPLITS:
        raise CompeteError(f"split must be one of {SPLITS}, not {split!r}")
    with atomic_path(root / f"{split}.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors, allow_pickle=False)
    table = pd.DataFrame({"id": ids, "landmark": [label or "" for label in labels]})
    with atomic_path(root / f"{split}.csv") as tmp:
        table.to_csv(tmp, index=False)
    mark_written(root / f"{split}.npy", root / f"{split}.csv")


def write_meta(root: Path, identities: dict[str, str], model: str) -> Path:
    """features.json, written after every split's files: a folder without it is not read as features."""
    splits = {split: {"features": identity} for split, identity in identities.items()}
    path = root / FEATURES_META
    atomic_write_json(path, {"model": model, "splits": splits})
    mark_written(path)
    return path


def check_out_folder(out: Path, source: Path) -> None:
    """Where `compete features` may write: not the competition folder (it would then read as
    features for good), nor inside or around it, and only a folder of nothing but compete's own
    files (a Kaggle download's train.csv sits exactly where ours would go)."""
    resolved, source = out.resolve(), source.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise CompeteError(f"--out {out} is, holds or lies inside the competition folder {source}: choose a new folder")
    foreign = foreign_files(resolved)
    if foreign and is_features_folder(resolved) and set(foreign) <= _files_of(read_meta(resolved)):
        return  # written by compete before it marked its files (v0.4)
    if foreign:
        raise CompeteError(
            f"--out {out} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''} that compete did not "
            "write: not replaced; choose a new or empty folder"
        )


def _files_of(meta: dict) -> set[str]:
    return {FEATURES_META} | {f"{split}{suffix}" for split in meta["splits"] for suffix in (".npy", ".csv")}
