"""A sweep's outcomes: results.jsonl, one line per (configuration, submit variant) as it ends,
read back on a re-run so finished work is skipped; the best runs among them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from competition.io import file_lock, json_text, read_jsonl
from competition.sweep.plan import Configuration


def _append(path: Path, outcome: dict) -> None:
    with file_lock(path.with_suffix(".lock")):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json_text(outcome) + "\n")


def describe_outcome(outcome: dict) -> str:
    if outcome["status"] == "done":
        top1 = outcome["scores"].get("top1", float("nan"))
        return f"  {outcome['label']} · {outcome['variant']}: top-1 {top1:.3f} in {outcome['seconds']:.0f} s"
    return f"  {outcome['label']} · {outcome['variant']}: failed: {outcome['reason']}"


def best_runs(outcomes: list[dict], variant: str, top: int) -> list[dict]:
    """The `top` trained runs that kept their training (a run that fell back is its backbone),
    ranked by `variant`'s top-1 then mAP@10."""
    kept = [
        o
        for o in outcomes
        if o["status"] == "done"
        and o["variant"] == variant
        and o["regime"] in ("last", "full")
        and not o.get("fallback")
    ]
    return sorted(kept, key=lambda o: (o["scores"].get("top1", 0), o["scores"].get("map@10", 0)), reverse=True)[:top]


class ResultsFile:
    """results.jsonl of a sweep's folder: appended under a lock, one outcome a line."""

    def __init__(self, path: Path, echo: Callable[[str], None] = print):
        self.path, self.echo = path, echo

    def done(self) -> dict[tuple[str, str], dict]:
        """The finished outcomes by (configuration id, variant)."""
        return {(o["id"], o["variant"]): o for o in read_jsonl(self.path) if o["status"] == "done"}

    def record(self, configuration: Configuration, variant: str, status: str, started: float, **extra) -> dict:
        """One outcome, appended to the file and said in a line."""
        seconds = time.time() - started + extra.get("train_seconds", 0.0)
        outcome = {
            "id": configuration.id,
            "label": configuration.label,
            "backbone": configuration.backbone,
            "regime": configuration.regime,
            "variant": variant,
            "status": status,
            "seconds": round(seconds, 1),
            "scores": {},
            **extra,
        }
        _append(self.path, outcome)
        self.echo(describe_outcome(outcome))
        return outcome
