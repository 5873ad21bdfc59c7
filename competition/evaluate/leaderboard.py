"""leaderboard.md: every scored submission as one row, best top-1 first.

The rows live in leaderboard.jsonl beside the Markdown (one JSON object per line, the
source of truth); each new row is appended under a file lock and the Markdown table is
re-rendered atomically, so two commands finishing at once both land and a reader never
sees half a table.
"""

from __future__ import annotations

import json
from pathlib import Path

from competition.io import atomic_write_text, file_lock

COLUMNS = [  # (record key, column title)
    ("name", "run"), ("backbones", "backbones"), ("regime", "regime"), ("augmentation", "augmentation"),
    ("tta", "TTA"), ("postprocess", "post-processing"), ("unseen_guard", "unseen guard"),
    ("top1", "top-1"), ("top3", "top-3"), ("top10", "top-10"), ("map@10", "mAP@10"),
    ("seen_top1", "seen top-1"), ("unseen_top1", "unseen top-1"), ("date", "date"),
]

HEADER = """# Leaderboard

Local scores of every submission scored with `compete submit` / `compete score`, best
top-1 first. Seen/unseen split the queries by whether their landmark is in `train/`.
Rows live in `leaderboard.jsonl`; this file is regenerated from it.

"""


def records_file(markdown: Path) -> Path:
    return markdown.with_suffix(".jsonl")


def read_records(markdown: str | Path) -> list[dict]:
    path = records_file(Path(markdown))
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cell(value) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def render(records: list[dict]) -> str:
    ordered = sorted(records, key=lambda r: (-(r.get("top1") or 0.0), r.get("date", "")))
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r.get(key)) for key, _ in COLUMNS) + " |" for r in ordered]
    return HEADER + "\n".join(lines) + "\n"


def add_record(markdown: str | Path, record: dict) -> None:
    markdown = Path(markdown)
    with file_lock(markdown.with_suffix(".lock")):
        with open(records_file(markdown), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            handle.flush()
        atomic_write_text(markdown, render(read_records(markdown)))
