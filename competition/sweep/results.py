"""A sweep's results as a paper's table (Markdown) and a chart (PNG).

Rows: the off-the-shelf backbones first, then each configuration and submit variant in the
order the sweep ran them, the ensemble last; columns: top-1/3/10 and mAP@10 over all
queries, top-1 on seen and unseen landmarks, wall time. The best value of each score
column is in bold. A configuration that failed keeps its row, with its reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from competition.evaluate.metrics import score_key
from competition.report.plots import plt, save_figure
from competition.submit.models import FellBack

COLUMNS = [  # (score name, title)
    ("top1", "top-1"),
    ("top3", "top-3"),
    ("top10", "top-10"),
    ("map@10", "mAP@10"),
    (score_key("seen", "top1"), "seen top-1"),
    (score_key("unseen", "top1"), "unseen top-1"),
]


def _fused(outcome: dict) -> bool:
    """Whether submit fused class posteriors into this row's ranking (rows written before the
    `fused` field: --landmarks known with a trained run, as only runs carry a classifier)."""
    if "fused" in outcome:
        return outcome["fused"]
    return outcome.get("landmarks", "").startswith("known") and outcome.get("regime") != "off-the-shelf"


def _fell_back(outcome: dict) -> FellBack | None:
    """Why submit put the pretrained backbone in the run's place, None when it did not; a row of
    an earlier version (which fell back only on a loss, and said it otherwise) reads as a loss."""
    if not outcome.get("fallback"):
        return None
    try:
        return FellBack(outcome["fallback"])
    except ValueError:
        return FellBack.LOST


def _row_title(outcome: dict, variants: int) -> str:
    title = outcome["label"]
    if variants > 1 and outcome.get("variant"):
        title += f" · {outcome['variant']}"
    if _fused(outcome):
        title += " [known]"  # class posteriors fused: what --landmarks known (or auto's choice of it) did
    if reason := _fell_back(outcome):
        title += " ‡" if reason is FellBack.UNTOLD else " †"
    return title


def results_table(outcomes: list[dict]) -> str:
    variants = len({o.get("variant") for o in outcomes if o.get("variant")})
    done = [o for o in outcomes if o["status"] == "done"]
    best = {key: max((o["scores"].get(key, float("-inf")) for o in done), default=None) for key, _ in COLUMNS}
    lines = [
        "| configuration | " + " | ".join(title for _, title in COLUMNS) + " | wall (s) |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for outcome in outcomes:
        if outcome["status"] != "done":
            reason = outcome.get("reason", "").replace("|", "/")
            lines.append(f"| {_row_title(outcome, variants)} | failed: {reason} |" + " |" * len(COLUMNS))
            continue
        cells = []
        for key, _ in COLUMNS:
            value = outcome["scores"].get(key)
            text = "–" if value is None or np.isnan(value) else f"{value:.3f}"
            cells.append(f"**{text}**" if value is not None and value == best[key] else text)
        lines.append(f"| {_row_title(outcome, variants)} | " + " | ".join(cells) + f" | {outcome['seconds']:.0f} |")
    notes = ["Wall time: training plus the first variant's submit; later variants reuse the cached embeddings."]
    if any(_fused(o) for o in outcomes):
        notes.append("[known]: every query taken as a training landmark; the runs' class posteriors were fused in.")
    reasons = {_fell_back(o) for o in outcomes}
    if FellBack.LOST in reasons:
        notes.append(
            "† the run lost to its pretrained backbone in validation, so submit used the backbone "
            "(--if-worse fallback)."
        )
    if FellBack.UNTOLD in reasons:
        notes.append(
            "‡ validation had too few photos to tell whether the run helps, so submit used the backbone "
            "(--if-worse fallback)."
        )
    return "\n".join(lines + [""] + notes)


def results_chart(outcomes: list[dict], path: str | Path) -> Path:
    """Horizontal bars: top-1 over all, seen and unseen queries for each row that ran."""
    done = [o for o in outcomes if o["status"] == "done"]
    variants = len({o.get("variant") for o in done if o.get("variant")})
    groups = [("top1", "all"), (score_key("seen", "top1"), "seen"), (score_key("unseen", "top1"), "unseen")]
    figure, axis = plt.subplots(figsize=(9, 1.2 + 0.55 * max(len(done), 1)))
    positions = np.arange(len(done))
    height = 0.8 / len(groups)
    for index, (key, title) in enumerate(groups):
        values = [o["scores"].get(key, np.nan) for o in done]
        axis.barh(positions + (index - 1) * height, np.nan_to_num(values), height, label=title)
    axis.set_yticks(positions, [_row_title(o, variants) for o in done], fontsize=8)
    axis.invert_yaxis()
    shown = [v for o in done for key, _ in groups if (v := o["scores"].get(key)) is not None and v == v]
    axis.set_xlim(max(0.0, np.floor((min(shown, default=0.0) - 0.05) * 10) / 10), 1)  # where the rows differ
    axis.set_xlabel("top-1 accuracy")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    axis.grid(axis="x", alpha=0.3)
    return save_figure(figure, path)
