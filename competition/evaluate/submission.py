"""The submission file: write it, read it back, and check it before anyone uploads it, in any
of the formats of evaluate/formats.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from competition.errors import CompeteError
from competition.evaluate.formats import CSV, Rows, SubmissionFormat, format_of
from competition.io import atomic_write_text, check_replaceable, mark_written


def check_unique_ids(names: Sequence[str], fmt: SubmissionFormat, what: str) -> None:
    """Kaggle ids drop the extension, so a.jpg and a.png would become one id, and are joined by
    spaces, so an id with whitespace would split: refuse both before any work."""
    if bad := fmt.spaced(names):
        raise CompeteError(
            f"the {fmt.name} format joins ids with spaces; these {what} names hold whitespace (a space, tab or "
            f"line break): {', '.join(map(repr, bad[:3]))}: rename them"
        )
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(fmt.photo(name), name)
        if other != name:
            raise CompeteError(
                f"{what} photos {other} and {name} share the id '{fmt.photo(name)}', which the "
                f"{fmt.name} format cannot tell apart: rename one"
            )


def ranked_names(ranking: np.ndarray, gallery_names: Sequence[str]) -> list[list[str]]:
    names = np.asarray(gallery_names, dtype=object)
    return [list(names[row]) for row in ranking]


def render_submission(query_names: Sequence[str], results: Sequence[Sequence[str]], fmt: SubmissionFormat = CSV) -> str:
    """The text of a ranking submission in `fmt`."""
    if fmt.render is None:
        raise CompeteError(f"the {fmt.name} format names landmarks, not ranked gallery photos")
    return fmt.render(query_names, results)


def check_submission_target(path: str | Path) -> None:
    """A submission replaces only a file compete wrote and nobody changed since: `--submissions-dir
    data --name labels` must never replace the competition's labels.csv, nor a user's own file
    (one in compete's own format included: a header proves nothing of who wrote the rows)."""
    check_replaceable(path, "submission", "choose another --name or --submissions-dir, or remove it")


def write_submission_text(path: str | Path, text: str) -> Path:
    """Any format's file, written whole or not at all, and marked as compete's own."""
    check_submission_target(path)
    atomic_write_text(path, text)
    mark_written(path)
    return Path(path)


def write_submission(
    path: str | Path, query_names: Sequence[str], results: Sequence[Sequence[str]], fmt: SubmissionFormat = CSV
) -> Path:
    return write_submission_text(path, render_submission(query_names, results, fmt))


def require_submission(path: str | Path) -> Path:
    """The submission file, checked first: a mistyped name is the likelier mistake than the data folder."""
    if not Path(path).is_file():
        raise CompeteError(f"{path}: submission file not found")
    return Path(path)


def read_submission_rows(path: str | Path) -> tuple[SubmissionFormat, Rows]:
    """The file's format and its (query, [gallery names or ids, best first]) rows, in file
    order, duplicates kept (the validator reports them). A UTF-8 byte-order mark is fine."""
    path = require_submission(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CompeteError(f"{path}: not UTF-8 text ({error})") from error
    fmt = format_of(path, text)
    if fmt.read is None:
        raise CompeteError(
            f"{path} is a {fmt.name} file ({','.join(fmt.header)}): it names landmarks, not gallery photos; "
            "`compete score` gives its GAP and `compete validate` checks it"
        )
    return fmt, fmt.read(path, text)


def read_submission(path: str | Path) -> tuple[SubmissionFormat, dict[str, list[str]]]:
    """The file's format and {query: [gallery names or ids, best first]}; a query listed twice is an error."""
    fmt, rows = read_submission_rows(path)
    result: dict[str, list[str]] = {}
    for query, names in rows:
        if query in result:
            raise CompeteError(f"{path}: query {query} appears twice")
        result[query] = names
    return fmt, result
