"""Score a submission against a Google Landmark solution file, as the Kaggle leaderboard does:
a retrieval file against a Retrieval solution (mAP@100), a recognition file against a
Recognition solution (GAP).

The competitions' solution file (`retrieval_solution_v2.1.csv` for 2019-2021) has one row per
test image: `id,images,Usage`, where `images` are the space-joined index ids showing the same
landmark and `Usage` is Public, Private or Ignored. The metric is mAP@100:

    AP@100(q) = 1 / min(m_q, 100) * sum over k <= 100 of P(k) * rel(k)

with m_q the number of relevant index images. Ignored rows (test images of no landmark in
the index) count in neither leaderboard. A Public or Private row whose `images` is empty or
`None` is refused, naming its line: its AP divides by min(0, 100), which the metric leaves
undefined (a score of 0 would be a guess), so such a query must be Ignored.

The Recognition competitions' solution file (2019-2021) is `id,landmarks,Usage`: `landmarks`
the space-joined landmark ids the test image shows (empty: no landmark, a row that only lowers
the precision of the predictions ranked below a confident guess for it). GAP as the hosts'
metric computes it (evaluate/recognition.py), predictions of equal confidence ranked by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.errors import CompeteError
from competition.evaluate.formats import KAGGLE, RECOGNITION, SubmissionFormat
from competition.evaluate.metrics import average_precision
from competition.evaluate.recognition import global_average_precision, is_recognition, read_predictions
from competition.evaluate.submission import read_submission
from competition.io import counted

USAGES = ("Public", "Private")


@dataclass(frozen=True)
class SolutionRow:
    relevant: frozenset[str]  # index ids (retrieval) or landmark ids (recognition)
    usage: str  # Public, Private or Ignored


@dataclass(frozen=True)
class Solution:
    fmt: SubmissionFormat  # what it scores, by its columns: KAGGLE's id,images (retrieval) or RECOGNITION's
    rows: dict[str, SolutionRow]  # by test id

    @property
    def task(self) -> str:
        return "retrieval" if self.fmt.ranks else "recognition"


def read_solution(path: str | Path) -> Solution:
    """Each test id's right answers and usage, from a Retrieval or a Recognition solution file."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CompeteError(f"{path}: not a readable solution file ({error})") from error
    fmt = RECOGNITION if RECOGNITION.header[1] in table.columns else KAGGLE
    answers_column = fmt.header[1]
    missing = {"id", answers_column, "Usage"} - set(table.columns)
    if missing:
        raise CompeteError(
            f"{path}: a solution file has the columns id,images,Usage (retrieval) or id,landmarks,Usage "
            f"(recognition); missing {sorted(missing)}"
        )
    unknown = sorted(set(table["Usage"]) - {*USAGES, "Ignored"})
    if unknown:
        raise CompeteError(f"{path}: Usage must be Public, Private or Ignored, not {unknown[:3]}")
    solution = {}
    for line, (test_id, answers, usage) in enumerate(zip(table["id"], table[answers_column], table["Usage"]), start=2):
        test_id = test_id.strip()
        if not test_id:
            raise CompeteError(f"{path}, line {line}: the id is blank; every row names one test image")
        if test_id in solution:
            raise CompeteError(
                f"{path}, line {line}: id {test_id!r} is given a second time; each test image has one row"
            )
        relevant = frozenset(i for i in answers.split() if i != "None")
        if not relevant and usage in USAGES and fmt.ranks:
            raise CompeteError(
                f"{path}, line {line}: the {usage} row of {test_id!r} names no index image, so its AP (divided by "
                "min(m, 100)) is undefined; mark it Ignored or give its images"
            )
        solution[test_id] = SolutionRow(relevant, usage)
    if not any(row.usage in USAGES for row in solution.values()):
        raise CompeteError(f"{path}: every row is Ignored (or the file has none): nothing can be scored")
    return Solution(fmt, solution)


def score_against_solution(submission: str | Path, solution: Solution) -> dict[str, float | int]:
    """The Public and Private leaderboards' scores (and how many queries each), as Kaggle computes
    them: mAP@100 for retrieval, GAP for recognition; a query the submission leaves out scores 0."""
    if is_recognition(submission) == solution.fmt.ranks:
        made = "a recognition file (id,landmarks)" if is_recognition(submission) else "a retrieval file"
        raise CompeteError(f"{submission} is {made}, and the solution file is a {solution.task} solution")
    if solution.fmt.ranks:
        return _map_by_usage(submission, solution.rows)
    return _gap_by_usage(submission, solution.rows)


def _map_by_usage(submission: str | Path, solution: dict[str, SolutionRow]) -> dict[str, float | int]:
    fmt, rows = read_submission(submission)

    def to_id(name: str) -> str:  # compete's own formats name files; the solution names ids
        return name if fmt.by_id else KAGGLE.photo(name)

    predictions = {to_id(query): [to_id(g) for g in ranked] for query, ranked in rows.items()}
    unknown = sorted(set(predictions) - set(solution))
    if unknown:
        raise CompeteError(f"{submission}: queries not in the solution file: {', '.join(unknown[:5])}")
    scores: dict[str, float] = {}
    for usage in USAGES:
        ids = [i for i, row in solution.items() if row.usage == usage]
        if not ids:
            continue
        hits = np.zeros((len(ids), KAGGLE.most_per_row), dtype=bool)  # the hosts' mAP@100
        for row, query in enumerate(ids):
            ranked = predictions.get(query, [])[: KAGGLE.most_per_row]
            hits[row, : len(ranked)] = _first_relevant(ranked, solution[query].relevant)
        counts = np.array([len(solution[q].relevant) for q in ids])
        scores[f"{usage.lower()}_map@100"] = float(average_precision(hits, KAGGLE.most_per_row, counts).mean())
        scores[f"{usage.lower()}_queries"] = len(ids)
    return scores


def _gap_by_usage(submission: str | Path, solution: dict[str, SolutionRow]) -> dict[str, float | int]:
    rows = read_predictions(submission)
    listed = [test_id for test_id, _, _ in rows]
    if twice := sorted({q for q in listed if listed.count(q) > 1}):  # the hosts' reader refuses it too
        raise CompeteError(f"{submission}: {counted(len(twice), 'query')} listed more than once: {twice[:5]}")
    if unknown := sorted(set(listed) - set(solution)):
        raise CompeteError(f"{submission}: queries not in the solution file: {', '.join(unknown[:5])}")
    given = {test_id: (landmark, confidence) for test_id, landmark, confidence in rows}
    scores: dict[str, float | int] = {}
    for usage in USAGES:
        ids = sorted(i for i, row in solution.items() if row.usage == usage)  # ties in confidence: by id
        if ids:
            predicted = [given.get(i, (None, 0.0))[0] for i in ids]
            confidence = np.array([given.get(i, (None, 0.0))[1] for i in ids])
            gap = global_average_precision(predicted, confidence, [solution[i].relevant for i in ids])
            scores[f"{usage.lower()}_gap"] = gap
            scores[f"{usage.lower()}_queries"] = len(ids)
    return scores


def describe_solution_scores(scores: dict[str, float | int]) -> list[str]:
    """One line per leaderboard, as `compete score --solution` prints them."""
    lines = []
    for usage in ("public", "private"):
        for metric, key in (("mAP@100", f"{usage}_map@100"), ("GAP", f"{usage}_gap")):
            if key in scores:
                value = "undefined (no query shows a landmark)" if np.isnan(scores[key]) else f"{scores[key]:.4f}"
                lines.append(f"{usage.title():<8} {metric} {value} ({counted(scores[f'{usage}_queries'], 'query')})")
    return lines


def _first_relevant(ranked: list[str], relevant: frozenset[str]) -> list[bool]:
    """Is each rank a relevant id seen for the first time? A repeated id keeps its rank but scores
    nothing again, as the hosts' metric skips it (else one right id repeated 100 times scores 1.0)."""
    seen: set[str] = set()
    hits = []
    for image in ranked:
        hits.append(image in relevant and image not in seen)
        seen.add(image)
    return hits
