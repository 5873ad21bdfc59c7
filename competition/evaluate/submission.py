"""The submission file: write it, read it back, and check it before anyone uploads it.

Default format (CSV, header included), one row per query, gallery names best first:

    query,rank_1,rank_2,...,rank_k
    q_0001.jpg,g_0132.jpg,g_0007.jpg,...

Separate columns (rather than Kaggle's space-joined single column) keep file names that
contain spaces intact; `kaggle` writes `id,images` with space-joined names, and `json`
writes {query: [gallery, ...]}.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from competition.errors import CompeteError
from competition.io import atomic_write_text

FORMATS = ("csv", "kaggle", "json")


def ranked_names(ranking: np.ndarray, gallery_names: Sequence[str]) -> list[list[str]]:
    names = np.asarray(gallery_names, dtype=object)
    return [list(names[row]) for row in ranking]


def render_submission(query_names: Sequence[str], results: Sequence[Sequence[str]], fmt: str = "csv") -> str:
    if fmt == "json":
        return json.dumps(dict(zip(query_names, map(list, results))), indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "kaggle":
        bad = [name for row in results for name in row if " " in name]
        if bad:
            raise CompeteError(f"the kaggle format joins names with spaces; these contain one: {bad[:3]}")
        writer.writerow(["id", "images"])
        writer.writerows([q, " ".join(row)] for q, row in zip(query_names, results))
    elif fmt == "csv":
        k = max((len(r) for r in results), default=0)
        writer.writerow(["query"] + [f"rank_{i}" for i in range(1, k + 1)])
        writer.writerows([q, *row] for q, row in zip(query_names, results))
    else:
        raise CompeteError(f"unknown submission format '{fmt}': choose from {', '.join(FORMATS)}")
    return buffer.getvalue()


def write_submission(path: str | Path, query_names: Sequence[str], results: Sequence[Sequence[str]],
                     fmt: str = "csv") -> Path:
    path = Path(path)
    atomic_write_text(path, render_submission(query_names, results, fmt))
    return path


def read_submission_rows(path: str | Path) -> list[tuple[str, list[str]]]:
    """Any of the formats as (query, [gallery names, best first]) rows, in file order,
    duplicates kept (the validator reports them)."""
    path = Path(path)
    if not path.is_file():
        raise CompeteError(f"{path}: submission file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CompeteError(f"{path}: not UTF-8 text ({error})") from error
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CompeteError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise CompeteError(f"{path}: JSON must map each query to a list of gallery names")
        return [(str(q), [str(g) for g in row]) for q, row in data.items()]
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        raise CompeteError(f"{path}: empty submission")
    header, body = rows[0], rows[1:]
    if header == ["id", "images"]:
        return [(row[0], row[1].split() if len(row) > 1 else []) for row in body]
    if header[0] != "query":
        raise CompeteError(f"{path}: header must start with 'query' (or be 'id,images'), found {header[:3]}")
    return [(row[0], [name for name in row[1:] if name]) for row in body]


def read_submission(path: str | Path) -> dict[str, list[str]]:
    """{query: [gallery names, best first]}; a query listed twice is an error."""
    result: dict[str, list[str]] = {}
    for query, names in read_submission_rows(path):
        if query in result:
            raise CompeteError(f"{path}: query {query} appears twice")
        result[query] = names
    return result
