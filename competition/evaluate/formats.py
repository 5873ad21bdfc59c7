"""The submission formats, one record each in FORMATS: how a file is named, written, known by
its first row and read back, how its rows are checked, and what scores it by default. Every
other module asks the record; none compares a format's name.

- csv (compete's own): `query,rank_1,...,rank_k`, one row per query, gallery file names best
  first, each in its own column (so names holding spaces stay intact);
- json: {query: [gallery, ...]};
- kaggle: what the Google Landmark Retrieval competitions score (mAP@100): `id,images`, ids being
  file names without their extension, space-joined, at most 100 per row;
- recognition: Kaggle's landmark recognition format, `id,landmarks`, one landmark and its
  confidence per query (written, read and scored by evaluate/recognition.py).

A new format: its record here (with its render and read when it ranks), a line in FORMATS and
its name in settings/choices.Format.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from competition.errors import CompeteError

Rows = list[tuple[str, list[str]]]  # (query, [gallery names or ids, best first]) in file order


@dataclass(frozen=True)
class SubmissionFormat:
    name: str
    suffix: str  # the file's extension
    header: tuple[str, ...]  # its first row, exactly (none: the suffix alone says the format)
    title: str  # what it is, for a person
    by_id: bool = False  # photos named by id: the file name without its extension, as Kaggle names them
    ranks: bool = True  # rows rank gallery photos (else each names a landmark: recognition)
    open_header: bool = False  # the header only starts with `header` (a column per rank follows)
    separator: str = ","  # between a row's fields
    joined: bool = False  # a row's ids joined by spaces in one cell, so an id must hold none
    most_per_row: int = 0  # the names a row may hold, any number up to it; 0: exactly k, every row alike
    default_k: int = 10  # -k and mAP@k where not given
    render: Callable[[Sequence[str], Sequence[Sequence[str]]], str] | None = None  # (queries, rankings) -> text
    read: Callable[[Path, str], Rows] | None = None  # (path, its text) -> rows

    def photo(self, name: str) -> str:
        """How a photo is named in this format: its file name, or its id."""
        return PurePosixPath(name).stem if self.by_id else name

    def spaced(self, names: Sequence[str]) -> list[str]:
        """Names whose id would hold a space, a tab or a line break where the format joins ids with spaces."""
        return [name for name in names if self.joined and any(c.isspace() for c in self.photo(name))]

    def marks(self, first_row: Sequence[str]) -> bool:
        """Whether a file of this suffix whose first row is `first_row` is in this format."""
        cells = list(first_row[: len(self.header)] if self.open_header else first_row)
        return not self.header or cells == list(self.header)


def csv_lines(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file's rows, blank lines left out."""
    try:
        lines = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]
    except csv.Error as error:  # e.g. a field longer than the csv module's limit
        raise CompeteError(f"{path}: not a readable CSV ({error})") from error
    if not lines:
        raise CompeteError(f"{path}: empty submission")
    return lines


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _render_csv(query_names: Sequence[str], results: Sequence[Sequence[str]]) -> str:
    k = max((len(r) for r in results), default=0)
    header = ["query"] + [f"rank_{i}" for i in range(1, k + 1)]
    return _csv_text([header, *([q, *row] for q, row in zip(query_names, results))])


def _read_csv(path: Path, text: str) -> Rows:
    return [(row[0], [name for name in row[1:] if name]) for _, row in csv_lines(path, text)[1:]]


def _render_json(query_names: Sequence[str], results: Sequence[Sequence[str]]) -> str:
    return json.dumps(dict(zip(query_names, map(list, results))), indent=1) + "\n"


def _read_json(path: Path, text: str) -> Rows:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CompeteError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise CompeteError(f"{path}: JSON must map each query to a list of gallery names")
    return [(str(q), [str(g) for g in row]) for q, row in data.items()]


def _render_kaggle(query_names: Sequence[str], results: Sequence[Sequence[str]]) -> str:
    if bad := KAGGLE.spaced([*query_names, *(name for row in results for name in row)]):
        raise CompeteError(f"the kaggle format joins ids with spaces; these contain whitespace: {bad[:3]}")
    if max((len(row) for row in results), default=0) > KAGGLE.most_per_row:
        raise CompeteError(f"the kaggle format takes at most {KAGGLE.most_per_row} images per query: lower -k")
    rows = [[KAGGLE.photo(q), " ".join(KAGGLE.photo(g) for g in row)] for q, row in zip(query_names, results)]
    return _csv_text([KAGGLE.header, *rows])


def _read_kaggle(path: Path, text: str) -> Rows:
    lines = csv_lines(path, text)
    if extra := next((number for number, row in lines if len(row) > 2), None):
        raise CompeteError(f"{path}, line {extra}: more than 2 fields; a kaggle row is id,images")
    # split on each space, as the hosts' metric reads it: "a  b" holds an empty id at rank 2
    return [(row[0], row[1].split(" ") if len(row) > 1 and row[1] else []) for _, row in lines[1:]]


CSV = SubmissionFormat(
    "csv",
    ".csv",
    ("query",),
    "compete's CSV format, query,rank_1...",
    open_header=True,
    render=_render_csv,
    read=_read_csv,
)
KAGGLE = SubmissionFormat(
    "kaggle",
    ".csv",
    ("id", "images"),
    "Kaggle's id,images format",
    by_id=True,
    joined=True,
    most_per_row=100,  # Google Landmark Retrieval: at most 100 index ids per query, scored by mAP@100
    default_k=100,
    render=_render_kaggle,
    read=_read_kaggle,
)
JSON = SubmissionFormat("json", ".json", (), "compete's JSON format", render=_render_json, read=_read_json)
RECOGNITION = SubmissionFormat(
    "recognition", ".csv", ("id", "landmarks"), "Kaggle's id,landmarks recognition format", by_id=True, ranks=False
)
FORMATS: dict[str, SubmissionFormat] = {fmt.name: fmt for fmt in (CSV, KAGGLE, JSON, RECOGNITION)}


def _first_row(path: Path, text: str, separator: str) -> list[str]:
    try:
        return next((row for row in csv.reader(io.StringIO(text), delimiter=separator) if row), [])
    except csv.Error as error:  # e.g. a field longer than the csv module's limit
        raise CompeteError(f"{path}: not a readable CSV ({error})") from error


def format_of(path: Path, text: str) -> SubmissionFormat:
    """The format of a file with this name and text: the one its suffix alone says (json), else the
    one its first row says (a file of another suffix judged by its first row alone)."""
    fitting = [fmt for fmt in FORMATS.values() if fmt.suffix == path.suffix]
    fitting = fitting or [fmt for fmt in FORMATS.values() if fmt.header]
    if unmarked := [fmt for fmt in fitting if not fmt.header]:
        return unmarked[0]
    first = {separator: _first_row(path, text, separator) for separator in {fmt.separator for fmt in fitting}}
    if not any(first.values()):
        raise CompeteError(f"{path}: empty submission")
    if marked := [fmt for fmt in fitting if fmt.marks(first[fmt.separator])]:
        return marked[0]
    headers = " or ".join(f"'{fmt.separator.join(fmt.header)}'" for fmt in fitting if fmt.header)
    raise CompeteError(f"{path}: header must start with {headers}, found {first[fitting[0].separator][:3]}")
