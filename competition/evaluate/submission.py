"""The submission file: write it, read it back, and check it before anyone uploads it.

Default format (CSV, header included), one row per query, gallery names best first:

    query,rank_1,rank_2,...,rank_k
    q_0001.jpg,g_0132.jpg,g_0007.jpg,...

Separate columns (rather than Kaggle's space-joined single column) keep file names that
contain spaces intact; `json` writes {query: [gallery, ...]}. `kaggle` writes what the
Google Landmark Retrieval competitions score (mAP@100): `id,images`, ids being file names
without their extension, space-joined, at most 100 per row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from competition.errors import CompeteError
from competition.io import atomic_write_text, check_replaceable, mark_written
from competition.settings.choices import FORMATS
from competition.settings.submit import KAGGLE_MAX_IMAGES


def photo_id(name: str, fmt: str) -> str:
    """How a photo is named in a submission: its file name, or for kaggle its id (name without extension)."""
    return PurePosixPath(name).stem if fmt in ("kaggle", "recognition") else name


def _whitespace_ids(names: Sequence[str], fmt: str) -> list[str]:
    """Names whose kaggle id holds a space, a tab or a line break: the format joins ids with spaces."""
    return [name for name in names if any(c.isspace() for c in photo_id(name, fmt))]


def check_unique_ids(names: Sequence[str], fmt: str, what: str) -> None:
    """Kaggle ids drop the extension, so a.jpg and a.png would become one id, and are joined by
    spaces, so an id with whitespace would split: refuse both before any work."""
    if fmt == "kaggle" and (bad := _whitespace_ids(names, fmt)):
        raise CompeteError(
            f"the kaggle format joins ids with spaces; these {what} names hold whitespace (a space, tab or line "
            f"break): {', '.join(map(repr, bad[:3]))}: rename them"
        )
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(photo_id(name, fmt), name)
        if other != name:
            raise CompeteError(
                f"{what} photos {other} and {name} share the id '{photo_id(name, fmt)}', which the "
                f"{fmt} format cannot tell apart: rename one"
            )


def submission_format(path: str | Path, header: Sequence[str] | None = None) -> str:
    if Path(path).suffix == ".json":
        return "json"
    return "kaggle" if header is not None and list(header) == ["id", "images"] else "csv"


def ranked_names(ranking: np.ndarray, gallery_names: Sequence[str]) -> list[list[str]]:
    names = np.asarray(gallery_names, dtype=object)
    return [list(names[row]) for row in ranking]


def render_submission(query_names: Sequence[str], results: Sequence[Sequence[str]], fmt: str = "csv") -> str:
    if fmt == "json":
        return json.dumps(dict(zip(query_names, map(list, results))), indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "kaggle":
        bad = _whitespace_ids([q for q in query_names] + [name for row in results for name in row], fmt)
        if bad:
            raise CompeteError(f"the kaggle format joins ids with spaces; these contain whitespace: {bad[:3]}")
        if max((len(row) for row in results), default=0) > KAGGLE_MAX_IMAGES:
            raise CompeteError(f"the kaggle format takes at most {KAGGLE_MAX_IMAGES} images per query: lower -k")
        writer.writerow(["id", "images"])
        writer.writerows(
            [photo_id(q, fmt), " ".join(photo_id(g, fmt) for g in row)] for q, row in zip(query_names, results)
        )
    elif fmt == "csv":
        k = max((len(r) for r in results), default=0)
        writer.writerow(["query"] + [f"rank_{i}" for i in range(1, k + 1)])
        writer.writerows([q, *row] for q, row in zip(query_names, results))
    else:
        raise CompeteError(f"unknown submission format '{fmt}': choose from {', '.join(FORMATS)}")
    return buffer.getvalue()


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
    path: str | Path, query_names: Sequence[str], results: Sequence[Sequence[str]], fmt: str = "csv"
) -> Path:
    return write_submission_text(path, render_submission(query_names, results, fmt))


def require_submission(path: str | Path) -> Path:
    """The submission file, checked first: a mistyped name is the likelier mistake than the data folder."""
    if not Path(path).is_file():
        raise CompeteError(f"{path}: submission file not found")
    return Path(path)


def read_submission_rows(path: str | Path) -> tuple[str, list[tuple[str, list[str]]]]:
    """The file's format and its (query, [gallery names or ids, best first]) rows, in file
    order, duplicates kept (the validator reports them). A UTF-8 byte-order mark is fine."""
    path = require_submission(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CompeteError(f"{path}: not UTF-8 text ({error})") from error
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CompeteError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise CompeteError(f"{path}: JSON must map each query to a list of gallery names")
        return "json", [(str(q), [str(g) for g in row]) for q, row in data.items()]
    try:
        lines = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]
    except csv.Error as error:  # e.g. a field longer than the csv module's limit
        raise CompeteError(f"{path}: not a readable CSV ({error})") from error
    if not lines:
        raise CompeteError(f"{path}: empty submission")
    rows = [row for _, row in lines]
    header, body = rows[0], rows[1:]
    if header == ["id", "landmarks"]:
        raise CompeteError(
            f"{path} is a recognition file (id,landmarks): it names landmarks, not gallery photos; "
            "`compete score` gives its GAP and `compete validate` checks it"
        )
    if submission_format(path, header) == "kaggle":
        if extra := next((number for number, row in lines if len(row) > 2), None):
            raise CompeteError(f"{path}, line {extra}: more than 2 fields; a kaggle row is id,images")
        # split on each space, as the hosts' metric reads it: "a  b" holds an empty id at rank 2
        return "kaggle", [(row[0], row[1].split(" ") if len(row) > 1 and row[1] else []) for row in body]
    if header[0] != "query":
        raise CompeteError(f"{path}: header must start with 'query' (or be 'id,images'), found {header[:3]}")
    return "csv", [(row[0], [name for name in row[1:] if name]) for row in body]


def read_submission(path: str | Path) -> tuple[str, dict[str, list[str]]]:
    """The file's format and {query: [gallery names or ids, best first]}; a query listed twice is an error."""
    fmt, rows = read_submission_rows(path)
    result: dict[str, list[str]] = {}
    for query, names in rows:
        if query in result:
            raise CompeteError(f"{path}: query {query} appears twice")
        result[query] = names
    return fmt, result
