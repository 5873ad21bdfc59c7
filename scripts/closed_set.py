"""A closed-set copy of a competition folder: the same train/ and gallery/, and only the queries
whose landmark is in train/ (with their labels), as in a competition where every query shows a
training landmark.

    python scripts/closed_set.py ../shared/realdev runs/realdev-seen

The source is only read; the copy is a plain folder (photos copied, not linked), so the
measurements on it (`--landmarks auto` should pick known there) run like any user's data.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path


def closed_set_copy(source: Path, target: Path) -> int:
    """Write the copy; returns how many queries it kept."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source / "train", target / "train")
    shutil.copytree(source / "gallery", target / "gallery")
    (target / "query").mkdir()
    seen = {p.name for p in (source / "train").iterdir() if p.is_dir()}
    with open(source / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept = []
    for row in rows:
        if row["image"].startswith("query/"):
            if row["class"] not in seen:
                continue
            shutil.copy2(source / row["image"], target / row["image"])
        kept.append(row)
    with open(target / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return sum(row["image"].startswith("query/") for row in kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    queries = closed_set_copy(args.source, args.target)
    print(f"{args.target}: {queries} queries of training landmarks")


if __name__ == "__main__":
    main()
