"""leaderboard.md: every scored submission as one row, best top-1 first.

The rows live in leaderboard.jsonl beside the Markdown (one JSON object per line, the
source of truth); each new row is appended under a file lock and the Markdown table is
re-rendered atomically, so two commands finishing at once both land and a reader never
sees half a table.
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import datetime
from pathlib import Path

from competition.errors import CompeteError
from competition.io import atomic_write_text, ensure_writable, file_lock, json_text, may_replace, read_jsonl
from competition.runs import CONFIG, run_settings

log = logging.getLogger(__name__)

COLUMNS = [  # (record key, column title)
    ("name", "run"),
    ("data", "data"),
    ("backbones", "backbones"),
    ("regime", "regime"),
    ("augmentation", "augmentation"),
    ("tta", "TTA"),
    ("postprocess", "post-processing"),
    ("unseen_guard", "unseen guard"),
    ("landmarks", "landmarks"),
    ("top1", "top-1"),
    ("top3", "top-3"),
    ("top10", "top-10"),
    ("map@10", "mAP@10"),
    ("map@100", "mAP@100"),  # what the Google Landmark Retrieval competitions score (kaggle-format submissions)
    ("gap", "GAP"),  # what the Google Landmark Recognition competitions score (recognition-format submissions)
    ("seen_top1", "seen top-1"),
    ("unseen_top1", "unseen top-1"),
    ("date", "date"),
    ("uploaded", "uploaded"),
]

TITLE = "# Leaderboard\n"
HEADER = (
    TITLE
    + """
Local scores of every submission scored with `compete submit` / `compete score`, by
competition folder, best top-1 first. Seen/unseen split the queries by whether their landmark is in `train/`.
Rows live in `{records}`; this file is regenerated from it.

"""
)


def records_file(markdown: Path) -> Path:
    return markdown.with_suffix(".jsonl")


def check_leaderboard(markdown: str | Path) -> None:
    """Refuse to (re)write a file that is not a compete leaderboard, or beside a .jsonl that is not
    its rows: `--leaderboard notes.md` must never replace the user's notes. Asked before any work."""
    markdown = Path(markdown)
    if not may_replace(markdown, TITLE.encode()):
        raise CompeteError(
            f"--leaderboard {markdown} is not a compete leaderboard (it does not start with '{TITLE.strip()}'): "
            "not overwritten; name a new file or an existing leaderboard.md"
        )
    rows = records_file(markdown)
    if not may_replace(rows, b"{"):
        raise CompeteError(
            f"{rows} is not a compete leaderboard's rows (JSON lines): not overwritten; name another file"
        )


def read_records(markdown: str | Path) -> list[dict]:
    return read_jsonl(records_file(Path(markdown)))


def _write_records(markdown: Path, records: list[dict]) -> None:
    check_leaderboard(markdown)
    for path in (markdown, records_file(markdown)):  # both or neither
        ensure_writable(path)
    atomic_write_text(records_file(markdown), "".join(json_text(r) + "\n" for r in records))
    atomic_write_text(markdown, render(records, records_file(markdown).name))


def _cell(value) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    # one Markdown cell whatever a name holds: control characters (a line break would end the row and
    # every later regeneration would keep it) become spaces, pipes and HTML are escaped
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(value))
    return text.replace("|", "\\|").replace("<", "&lt;")


def render(records: list[dict], records_name: str = "leaderboard.jsonl") -> str:
    # scores of different folders do not compare: rows grouped by folder, then best first
    ordered = sorted(records, key=lambda r: (r.get("data") or "", -(r.get("top1") or 0.0), r.get("date", "")))
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r.get(key)) for key, _ in COLUMNS) + " |" for r in ordered]
    return HEADER.format(records=records_name) + "\n".join(lines) + "\n"


def add_record(markdown: str | Path, record: dict) -> None:
    markdown = Path(markdown)
    with file_lock(markdown.with_suffix(".lock")):  # the whole file rewritten: an append cannot be cut short
        _write_records(markdown, read_records(markdown) + [record])


def record_scored_file(markdown: str | Path, submission: str | Path, scores: dict, data: str | Path = "") -> None:
    """A row for a submission scored on its own (`compete score --record`): what the file says,
    without the settings that made it."""
    submission = Path(submission)
    stamp = datetime.fromtimestamp(submission.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    record = {
        "name": submission.stem,
        "data": Path(data).resolve().name if data else "",
        "submission": str(submission),
        "date": stamp,
    }
    add_record(markdown, record | scores)


def mark_uploaded(markdown: str | Path, name: str, upload: dict) -> None:
    """Attach an upload (time, message, file hash) to the submission's row; a row is added
    when the file was never scored here."""
    markdown = Path(markdown)
    with file_lock(markdown.with_suffix(".lock")):
        records = read_records(markdown)
        matching = next((r for r in reversed(records) if r.get("name") == name), None)
        if matching is None:
            matching = {"name": name, "date": upload["time"][:16].replace("T", " ")}
            records.append(matching)
        matching.setdefault("uploads", []).append(upload)
        matching["uploaded"] = f"{upload['time'][:16].replace('T', ' ')} {upload['message']}"
        _write_records(markdown, records)


def flatten(data: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}, so nested configs compare key by key."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def diff_configs(
    first: dict, second: dict, ignore: tuple[str, ...] = ("date", "created", "run_name", "name")
) -> list[str]:
    """One line per setting that differs: 'key: first -> second'."""
    a, b = flatten(first), flatten(second)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k.rsplit(".", 1)[-1] not in ignore)
    return [f"{key}: {_cell(a.get(key))} -> {_cell(b.get(key))}" for key in keys]


def describe_entry(name: str, markdown: str | Path, runs_dir: str | Path) -> dict:
    """A leaderboard row by submission name, with each of its runs' config.json; or a run folder/name."""
    rows = [r for r in read_records(markdown) if r.get("name") == name]
    if rows:
        record = dict(rows[-1])
        for index, model in enumerate(record.get("models") or []):
            settings = run_settings(model, runs_dir)
            if settings is not None:
                record[f"model{index}"] = settings
        return record
    settings = run_settings(name, runs_dir)
    if settings is None:
        raise CompeteError(f"'{name}' is neither a submission in {markdown} nor a run folder with {CONFIG}")
    return settings
