"""Check a submission before upload and say exactly what is wrong with it.

For the kaggle format the checks are the Google Landmark Retrieval rules: header
`id,images`, one row per query id, only known ids, at most 100 space-separated images
per row, none twice. The other ranking formats must also list exactly k names per row
(each format's record says which rules it has: evaluate/formats.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from competition.data.discover import discover_competition
from competition.errors import CompeteError
from competition.evaluate.formats import RECOGNITION, Rows, SubmissionFormat
from competition.evaluate.recognition import is_recognition, recognition_problems
from competition.evaluate.submission import read_submission_rows, require_submission
from competition.io import counted

SHOWN = 5  # examples listed per kind of problem


def _some(items: Sequence[str]) -> str:
    items = list(items)
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _length_problems(fmt: SubmissionFormat, rows: Rows, k: int | None, gallery: int) -> list[str]:
    """Rows too long where the format caps them, else rows not exactly k long; empty ids where it joins them."""
    problems = []
    if fmt.most_per_row:
        too_long = [f"{q} ({len(names)})" for q, names in rows if len(names) > fmt.most_per_row]
        if too_long:
            problems.append(
                f"{counted(len(too_long), 'row')} with more than {fmt.most_per_row} images: {_some(too_long)}"
            )
    else:
        expected = k if k is not None else (len(rows[0][1]) if rows else 0)
        wrong_length = [f"{q} ({len(names)})" for q, names in rows if len(names) != expected]
        if wrong_length:
            problems.append(
                f"{counted(len(wrong_length), 'row')} without exactly {expected} gallery names: {_some(wrong_length)}"
            )
        if expected > gallery:
            problems.append(f"k={expected} is more than the {gallery} gallery images")
    if fmt.joined:
        gaps = [q for q, names in rows if "" in names]
        if gaps:  # Kaggle's metric counts the empty id as a wrong answer at its rank
            problems.append(
                f"{counted(len(gaps), 'row')} with an empty id (two spaces in a row, or a space at an end), which "
                f"Kaggle scores as a wrong answer at that rank: {_some(gaps)}"
            )
    return problems


def validate_submission(
    path: str | Path,
    query_names: Sequence[str],
    gallery_names: Sequence[str],
    k: int | None = None,
    expected_format: SubmissionFormat | None = None,
) -> list[str]:
    """Problems found, one line each; empty when the file is ready to upload.

    `k`: names per row where the format wants exactly k (csv/json; default: as many as the first
    row); `expected_format`: the format the file must be in, default whatever it is."""
    fmt, rows = read_submission_rows(path)
    problems = []
    if expected_format and fmt != expected_format:
        problems.append(f"the file is in {fmt.name} format, not {expected_format.name}{_header_note(expected_format)}")
    query_ids = [fmt.photo(name) for name in query_names]
    gallery = {fmt.photo(name) for name in gallery_names}
    counts = Counter(q for q, _ in rows)
    missing = [q for q in query_ids if q not in counts]
    if missing:
        problems.append(f"{counted(len(missing), 'query')} missing: {_some(missing)}")
    twice = [q for q, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{counted(len(twice), 'query')} listed more than once: {_some(twice)}")
    known = set(query_ids)
    unknown = [q for q in counts if q not in known]
    if unknown:
        problems.append(f"{counted(len(unknown), 'row')} name a query that is not in query/: {_some(unknown)}")
    problems += _length_problems(fmt, rows, k, len(gallery))
    not_in_gallery = sorted({name for _, names in rows for name in names if name and name not in gallery})
    if not_in_gallery:
        problems.append(f"{counted(len(not_in_gallery), 'name')} not in gallery/: {_some(not_in_gallery)}")
    repeated = [q for q, names in rows if len(set(names) - {""}) != len(names) - names.count("")]
    if repeated:
        problems.append(f"{counted(len(repeated), 'row')} list a gallery image twice: {_some(repeated)}")
    return problems


def _header_note(fmt: SubmissionFormat) -> str:
    return f" (its header must be exactly: {','.join(fmt.header)})" if fmt.header and not fmt.open_header else ""


def validate_against(
    submission: str | Path, data: str | Path, k: int | None = None, expected_format: SubmissionFormat | None = None
) -> tuple[list[str], list[str]]:
    """`validate_submission` against a competition folder's query and gallery photos; also
    returns what the folder itself skipped (files that are not photos), for the user to see."""
    require_submission(submission)
    found = discover_competition(data, need_train=False)
    if not found.query:
        raise CompeteError(f"{data}: no query/ images to validate against")
    recognition = is_recognition(submission)
    if recognition or expected_format == RECOGNITION:
        if not recognition:
            return [f"the file is not in {RECOGNITION.name} format{_header_note(RECOGNITION)}"], []
        return recognition_problems(submission, [r.name for r in found.query], found.train_classes), found.skipped
    names = [r.name for r in found.query], [r.name for r in found.gallery]
    return validate_submission(submission, *names, k, expected_format), found.skipped
