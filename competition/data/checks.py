"""Checks on a competition's photos that are warnings, not errors: unreadable files
(skipped and counted), the same photo under two classes, and training photos that also
appear in query/gallery (leakage: scores on them say nothing about unseen photos)."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from competition.data.discover import ImageRecord
from competition.data.features import is_feature_row
from competition.data.images import UnreadableImage, read_image
from competition.errors import CompeteError
from competition.io import sha256_of_file

log = logging.getLogger(__name__)


def unreadable_reason(path: Path) -> str | None:
    """None when the photo decodes, else why not (a top-level function: pool workers call it)."""
    try:
        read_image(path)
        return None
    except UnreadableImage as error:
        return str(error)


def readable_records(records: list[ImageRecord], strict: bool = False) -> tuple[list[ImageRecord], list[str]]:
    """The records whose photo decodes, and a message per skipped one (an error when strict)."""
    good, problems = [], []
    for record in records:
        reason = None if is_feature_row(record.path) else unreadable_reason(record.path)
        if reason is None:
            good.append(record)
            continue
        if strict:
            raise CompeteError(f"{reason} (--strict)")
        problems.append(reason)
        log.warning("skipped: %s", reason)
    return good, problems


def require_every_class(all_records: list[ImageRecord], readable: list[ImageRecord]) -> None:
    """A class whose every photo is unreadable cannot train: name it."""
    empty = sorted({r.label for r in all_records} - {r.label for r in readable})
    if empty:
        raise CompeteError(f"class(es) with no readable image: {', '.join(empty)}")


def _identical_groups(records: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Groups of two or more byte-identical files. Only files sharing a size are hashed, so
    a folder of distinct photos costs one stat per file (this runs on every train and submit)."""
    by_size: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        try:
            by_size[record.path.stat().st_size].append(record)
        except OSError:
            continue  # unreadable files are reported where they are read
    groups = []
    for same_size in (group for group in by_size.values() if len(group) > 1):
        by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in same_size:
            by_hash[sha256_of_file(record.path)].append(record)
        groups += [group for group in by_hash.values() if len(group) > 1]
    return groups


def cross_class_duplicates(train: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Groups of byte-identical training photos filed under more than one class."""
    duplicates = [group for group in _identical_groups(train) if len({r.label for r in group}) > 1]
    for group in duplicates:
        log.warning("the same photo is in several classes (label noise?): %s", ", ".join(r.key for r in group))
    return duplicates


def leaked_photos(train: list[ImageRecord], evaluation: list[ImageRecord]) -> list[ImageRecord]:
    """Query/gallery photos byte-identical to a training photo."""
    leaked = [
        r
        for group in _identical_groups(train + evaluation)
        if any(t.split == "train" for t in group)
        for r in group
        if r.split != "train"
    ]
    if leaked:
        log.warning(
            "%d query/gallery photo(s) are also in train/ (leakage: they inflate scores), e.g. %s",
            len(leaked),
            ", ".join(r.key for r in leaked[:3]),
        )
    return leaked
