"""Kaggle's landmark *recognition* format and its metric, Global Average Precision (GAP).

A recognition submission names, for each query, one training landmark and a confidence:

    id,landmarks
    q_0001,Eiffel_Tower 0.83

ids are query file names without their extension, as in the retrieval (kaggle) format; an
empty `landmarks` cell is no prediction. GAP, as the hosts of the Google Landmark Recognition
competitions define it (2019-2021): predictions sorted by confidence, best first,

    GAP = (1 / M) * sum_i P(i) * rel(i)

P(i) the share of right predictions among the first i, rel(i) 1 when the i-th is right, M the
queries that show a training landmark. A query of a landmark not in train/ (or of none) has no
right answer: a prediction for it only lowers the precision of every one ranked below it, so
a method pays for giving unknown landmarks low confidence. Reported twice: over every query
(`gap`, what the 2020 and 2021 competitions scored, with non-landmark queries) and over the
queries of training landmarks only (`gap_landmarks`, the 2019 private set's view).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from competition.data.discover import Competition
from competition.errors import CompeteError
from competition.evaluate.formats import RECOGNITION
from competition.evaluate.submission import write_submission_text
from competition.io import counted


def render_predictions(query_names: Sequence[str], landmarks: Sequence[str], confidences: np.ndarray) -> str:
    bad = [name for name in landmarks if not name or any(c.isspace() for c in name)]
    if bad:
        raise CompeteError(
            f"the recognition format writes 'landmark confidence': landmark names {bad[:3]} hold whitespace"
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECOGNITION.header)
    for query, landmark, confidence in zip(query_names, landmarks, confidences):
        writer.writerow([RECOGNITION.photo(query), f"{landmark} {float(confidence):.6g}"])
    return buffer.getvalue()


def write_predictions(path: str | Path, query_names, landmarks, confidences) -> Path:
    return write_submission_text(path, render_predictions(query_names, landmarks, confidences))


def is_recognition(path: str | Path) -> bool:
    """Whether a file is in the recognition format (its header is `id,landmarks`)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            return RECOGNITION.marks(next(csv.reader(file), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def read_predictions(path: str | Path) -> list[tuple[str, str | None, float]]:
    """(query id, landmark or None, confidence) rows in file order; a malformed row is an error
    naming its line: an extra field, or a confidence that is not a finite number (a NaN would
    sort anywhere, so GAP would depend on where its row sits)."""
    rows = list(csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    if not rows or not RECOGNITION.marks(rows[0]):
        raise CompeteError(f"{path}: a recognition submission starts with the header id,landmarks")
    predictions = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) > 2:
            raise CompeteError(f"{path}, line {number}: {len(row)} fields; a row is id,landmarks")
        cell = row[1].strip() if len(row) > 1 else ""
        if not cell:
            predictions.append((row[0], None, 0.0))
            continue
        parts = cell.split(" ")
        try:
            if len(parts) != 2 or not math.isfinite(confidence := float(parts[1])):
                raise ValueError
            predictions.append((row[0], parts[0], confidence))
        except ValueError:
            raise CompeteError(
                f"{path}, line {number}: landmarks must be 'landmark confidence', found {cell!r} (the confidence a "
                "finite number)"
            ) from None
    return predictions


def global_average_precision(
    predicted: Sequence[str | None], confidence: np.ndarray, truth: Sequence[Collection[str]]
) -> float:
    """GAP (see the module): `truth` each query's right landmarks (the hosts' solution files may
    list several; empty for a query that shows no training landmark), `predicted` None for no
    prediction. Ties in confidence keep the queries' order."""
    landmark_queries = sum(bool(t) for t in truth)
    if not landmark_queries:
        return float("nan")
    made = [i for i, p in enumerate(predicted) if p is not None]
    order = sorted(made, key=lambda i: -confidence[i])
    right = np.array([predicted[i] in truth[i] for i in order], dtype=float)
    precision = np.cumsum(right) / np.arange(1, len(right) + 1)
    return float((precision * right).sum() / landmark_queries)


def recognition_problems(path: str | Path, query_names: Sequence[str], landmarks: Sequence[str]) -> list[str]:
    """What is wrong with a recognition file for these queries and training landmarks (empty: ready)."""
    rows = read_predictions(path)
    ids = [RECOGNITION.photo(name) for name in query_names]
    listed = [q for q, _, _ in rows]
    problems = []
    if missing := sorted(set(ids) - set(listed)):
        problems.append(f"{counted(len(missing), 'query')} missing: {', '.join(missing[:5])}")
    if twice := sorted({q for q in listed if listed.count(q) > 1}):
        problems.append(f"{counted(len(twice), 'query')} listed more than once: {', '.join(twice[:5])}")
    if unknown := sorted(set(listed) - set(ids)):
        problems.append(f"{counted(len(unknown), 'row')} name a query that is not in query/: {', '.join(unknown[:5])}")
    known = set(landmarks)
    if strange := sorted({p for _, p, _ in rows if p is not None and p not in known}):
        problems.append(f"{counted(len(strange), 'landmark')} not in train/: {', '.join(strange[:5])}")
    return problems


def describe_scores(scores: dict) -> str:
    """The scores of a recognition file, as `compete score` and `compete submit` print them."""
    if not scores["landmark_queries"]:
        return (
            f"GAP undefined: none of the {scores['queries']} queries shows a landmark of train/, so no "
            "prediction can be right"
        )
    return (
        f"GAP {scores['gap']:.4f} over all {scores['queries']} queries, {scores['gap_landmarks']:.4f} over the "
        f"{scores['landmark_queries']} of training landmarks; {scores['accuracy']:.3f} of those recognised"
    )


def score_predictions(path: str | Path, competition: Competition) -> dict:
    """GAP over every query and over those of training landmarks, and the share of the latter
    recognised, against the competition's labels."""
    if not competition.query or any(r.label is None for r in competition.query):
        raise CompeteError(f"{competition.root}: labels.csv must give a class for every query to score")
    classes = set(competition.train_classes)
    if not classes:
        raise CompeteError(
            f"{competition.root}: recognition is scored against the landmarks of train/, and it has none"
        )
    rows = read_predictions(path)
    listed = [q for q, _, _ in rows]
    if len(set(listed)) != len(listed):  # which row would count is arbitrary: validate refuses it too
        twice = sorted({q for q in listed if listed.count(q) > 1})
        raise CompeteError(f"{path}: {counted(len(twice), 'query')} listed more than once: {', '.join(twice[:5])}")
    given = {q: (p, c) for q, p, c in rows}
    ids = [RECOGNITION.photo(r.name) for r in competition.query]
    truth = [{r.label} if r.label in classes else set() for r in competition.query]
    predicted = [given.get(q, (None, 0.0))[0] for q in ids]
    confidence = np.array([given.get(q, (None, 0.0))[1] for q in ids])
    landmark = np.array([bool(t) for t in truth])
    right = np.array([p in t for p, t in zip(predicted, truth)])
    only = np.flatnonzero(landmark)
    return {
        "gap": round(global_average_precision(predicted, confidence, truth), 4),
        "gap_landmarks": round(
            global_average_precision([predicted[i] for i in only], confidence[only], [truth[i] for i in only]), 4
        ),
        "accuracy": round(float(right[landmark].mean()), 4) if landmark.any() else None,
        "queries": len(ids),
        "landmark_queries": int(landmark.sum()),
    }
