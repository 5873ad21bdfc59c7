"""A closed-set copy of a competition folder: the same train/ and gallery/, and only the queries
whose landmark is in train/ (with their labels), as in a competition where every query shows a
training landmark.

    python scripts/closed_set.py ../shared/realdev runs/realdev-seen

The source is only read; the copy is a plain folder in compete's layout (photos copied, not
linked; a Google Landmarks source is laid out as train/<landmark>/, query/, gallery/), so the
measurements on it (`--landmarks auto` should pick known there) run like any user's data. The
target must be a new folder or a copy this script made before (which it replaces); the copy is
built beside it and moved into place whole, so an error leaves no half-made folder.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

from competition.data.discover import Competition, ImageRecord, discover_competition
from competition.errors import CompeteError

MARKER = ".closed-set-copy"  # says this folder was made here, so a later run may replace it


def _apart(source: Path, folder: Path, what: str) -> None:
    source, resolved = source.resolve(), folder.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise CompeteError(f"{folder}: {what} may not be, hold or lie inside the source {source}; choose a new folder")


def working_folder(target: Path) -> Path:
    """Where the copy is built before it is moved into place (removed first: left by an interrupted run)."""
    return target.parent / f".{target.name}.partial"


def check_target(source: Path, target: Path) -> None:
    """Refuse a target, or its working folder, that is, holds or lies inside the source (the
    working folder is emptied first), or a target this script did not make."""
    _apart(source, target, "the copy")
    _apart(source, working_folder(target), "the copy's working folder")
    resolved = target.resolve()
    if resolved.exists() and not (resolved / MARKER).is_file():
        if not resolved.is_dir() or any(resolved.iterdir()):
            raise CompeteError(f"{target} exists and was not made by this script: not replaced; choose a new folder")


def _copy(records: list[ImageRecord], folder: Path) -> None:
    for record in records:
        destination = folder / record.key
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record.path, destination)


def closed_set_copy(source: Path, target: Path) -> int:
    """Write the copy; returns how many queries it kept."""
    check_target(source, target)
    competition: Competition = discover_competition(source)
    if not competition.has_eval_labels:
        raise CompeteError(f"{source}: needs labels.csv with a class for every query and gallery photo")
    seen = set(competition.train_classes)
    queries = [r for r in competition.query if r.label in seen]
    building = working_folder(target)
    shutil.rmtree(building, ignore_errors=True)  # left by an interrupted run of this script
    building.mkdir(parents=True)
    _copy(competition.train + queries + competition.gallery, building)
    with open(building / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "class"])
        writer.writerows((r.key, r.label) for r in queries + competition.gallery)
    (building / MARKER).write_text(f"made by scripts/closed_set.py from {source.resolve()}\n")
    if target.exists():
        shutil.rmtree(target)  # checked above: empty, or this script's own copy
    building.rename(target)
    return len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    try:
        queries = closed_set_copy(args.source, args.target)
    except CompeteError as error:
        sys.exit(f"error: {error}")
    print(f"{args.target}: {queries} queries of training landmarks")


if __name__ == "__main__":
    main()
