"""Checks on a competition's photos that are warnings, not errors: unreadable files
(skipped and counted), the same photo under two classes, and training photos that also
appear in query/gallery (leakage: scores on them say nothing about unseen photos)."""

from __future__ import annotations

import logging
from collections import defaultdict

from competition.data.discover import ImageRecord
from competition.data.images import UnreadableImage, read_image
from competition.errors import CompeteError
from competition.io import sha256_of_file

log = logging.getLogger(__name__)


def readable_records(records: list[ImageRecord], strict: bool = False) -> tuple[list[ImageRecord], list[str]]:
    """The records whose photo decodes, and a message per skipped one (an error when strict)."""
    good, problems = [], []
    for record in records:
        try:
            read_image(record.path)
            good.append(record)
        except UnreadableImage as error:
            if strict:
                raise CompeteError(f"{error} (--strict)") from error
            problems.append(str(error))
            log.warning("skipped: %s", error)
    return good, problems


def require_every_class(all_records: list[ImageRecord], readable: list[ImageRecord]) -> None:
    """A class whose every photo is unreadable cannot train: name it."""
    empty = sorted({r.label for r in all_records} - {r.label for r in readable})
    if empty:
        raise CompeteError(f"class(es) with no readable image: {', '.join(empty)}")


def _by_content(records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        try:
            groups[sha256_of_file(record.path)].append(record)
        except OSError:
            continue  # unreadable files are reported where they are read
    return groups


def cross_class_duplicates(train: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Groups of byte-identical training photos filed under more than one class."""
    duplicates = [group for group in _by_content(train).values() if len({r.label for r in group}) > 1]
    for group in duplicates:
        log.warning("the same photo is in several classes (label noise?): %s", ", ".join(r.key for r in group))
    return duplicates


def leaked_photos(train: list[ImageRecord], evaluation: list[ImageRecord]) -> list[ImageRecord]:
    """Query/gallery photos byte-identical to a training photo."""
    train_hashes = set(_by_content(train))
    leaked = [r for digest, group in _by_content(evaluation).items() if digest in train_hashes for r in group]
    if leaked:
        log.warning("%d query/gallery photo(s) are also in train/ (leakage: they inflate scores), e.g. %s",
                    len(leaked), ", ".join(r.key for r in leaked[:3]))
    return leaked
