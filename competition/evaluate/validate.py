"""Check a submission before upload and say exactly what is wrong with it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from competition.evaluate.submission import read_submission_rows

SHOWN = 5  # examples listed per kind of problem


def _some(items: Sequence[str]) -> str:
    items = list(items)
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def validate_submission(path: str | Path, query_names: Sequence[str], gallery_names: Sequence[str],
                        k: int | None = None) -> list[str]:
    """Problems found, one line each; empty when the file is ready to upload.

    Checks: every query exactly once, no unknown query, k gallery names per row (k from
    the first row when not given), every name in the gallery, no name twice in a row.
    """
    rows = read_submission_rows(path)
    queries, gallery = set(query_names), set(gallery_names)
    counts = Counter(q for q, _ in rows)
    problems = []
    missing = [q for q in query_names if q not in counts]
    if missing:
        problems.append(f"{len(missing)} query(ies) missing: {_some(missing)}")
    twice = [q for q, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} query(ies) listed more than once: {_some(twice)}")
    unknown = [q for q in counts if q not in queries]
    if unknown:
        problems.append(f"{len(unknown)} row(s) name a query that is not in query/: {_some(unknown)}")
    expected = k if k is not None else (len(rows[0][1]) if rows else 0)
    wrong_length = [f"{q} ({len(names)})" for q, names in rows if len(names) != expected]
    if wrong_length:
        problems.append(f"{len(wrong_length)} row(s) without exactly {expected} gallery names: {_some(wrong_length)}")
    not_in_gallery = sorted({name for _, names in rows for name in names if name not in gallery})
    if not_in_gallery:
        problems.append(f"{len(not_in_gallery)} name(s) not in gallery/: {_some(not_in_gallery)}")
    repeated = [q for q, names in rows if len(set(names)) != len(names)]
    if repeated:
        problems.append(f"{len(repeated)} row(s) list a gallery image twice: {_some(repeated)}")
    if expected > len(gallery):
        problems.append(f"k={expected} is more than the {len(gallery)} gallery images")
    return problems
