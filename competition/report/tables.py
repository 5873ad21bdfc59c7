"""Scores as text: the terminal lines, the report's HTML table, and Markdown comparisons.

All three read the flat score names of evaluate/metrics.py (`score_key`), so a new
metric shows up everywhere once it is in SHOWN_METRICS.
"""

from __future__ import annotations

import html

from competition.evaluate.metrics import GROUPS, SHOWN_METRICS, score_key


def score_rows(scores: dict[str, float], metrics=SHOWN_METRICS) -> list[tuple[str, dict[str, float]]]:
    """(group, {metric: value}) for every group with scores, metrics absent from `scores` left out."""
    rows = []
    for group in GROUPS:
        values = {m: scores[score_key(group, m)] for m in metrics if score_key(group, m) in scores}
        if values:
            rows.append((group, values))
    return rows


def format_scores(scores: dict[str, float]) -> str:
    """Indented lines for the terminal: `  all    top1 0.845  top3 0.903 ...`."""
    return "\n".join(
        f"  {group:<6} " + "  ".join(f"{m} {v:.3f}" for m, v in values.items()) for group, values in score_rows(scores)
    )


def scores_html(scores: dict[str, float]) -> str:
    rows = score_rows(scores)
    metrics = list(dict.fromkeys(m for _, values in rows for m in values))
    header = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{group}</th>" + "".join(f"<td>{values.get(m, float('nan')):.3f}</td>" for m in metrics) + "</tr>"
        for group, values in rows
    )
    return f"<table><tr><th></th>{header}</tr>{body}</table>"


def comparison_table(rows: list[tuple[str, dict]], ks=(1, 3, 10)) -> str:
    """Markdown: one row per method, top-1/3/10 for all, seen and unseen queries."""
    lines = [
        "| method | " + " | ".join(f"{g} top-{'/'.join(map(str, ks))}" for g in GROUPS) + " |",
        "|---|" + "---|" * len(GROUPS),
    ]
    for method, scores in rows:
        cells = ["/".join(f"{scores.get(score_key(g, f'top{k}'), float('nan')):.3f}" for k in ks) for g in GROUPS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
