"""A finished run in words, for the terminal: its validation against the pretrained backbone,
what the folds chose, and what submit will do with it."""

from __future__ import annotations

from pathlib import Path

from competition.io import counted
from competition.runs import SUMMARY, RunRecord, Verdict
from competition.train.validation import HELD_OUT, MAP_K


def describe(comparison: dict[str, dict]) -> list[str]:
    """One line per group, for the terminal."""
    lines = []
    for name, group in comparison.items():
        if not group["queries"] or "difference" not in group:
            lines.append(f"{name:<6} {group['verdict']} ({counted(group['queries'], 'validation query')})")
            continue
        mean, low, high = group["difference"][f"map@{MAP_K}"]
        lines.append(
            f"{name:<6} mAP@{MAP_K} {group['trained'][f'map@{MAP_K}']:.3f} vs pretrained "
            f"{group['pretrained'][f'map@{MAP_K}']:.3f} ({mean:+.3f}, 90% [{low:+.3f}, {high:+.3f}]), "
            f"top-1 {group['trained']['top1']:.3f} vs {group['pretrained']['top1']:.3f} "
            f"over {counted(group['queries'], 'query')}: {group['verdict']}"
        )
    return lines


def describe_gate(gated: dict) -> list[str]:
    """What the mixed folds said of fusing class posteriors per query, by P(known)."""
    if not gated:
        return []
    without, with_gate = gated["validation"]["without"], gated["validation"]["with"]
    change = ", ".join(
        f"{g} {without[f'{g}_map@{MAP_K}']:.3f} -> {with_gate[f'{g}_map@{MAP_K}']:.3f}"
        for g in HELD_OUT
        if f"{g}_map@{MAP_K}" in without
    )
    if not gated["weight"]:
        return [f"  on mixed sets: no fusion (the known-landmark gate, AUC {gated['gate_auc']:.2f}, did not pay)"]
    return [
        f"  on mixed sets: class posteriors fused per query by P(known) (gate AUC {gated['gate_auc']:.2f}, "
        f"weight {gated['weight']:g}); mAP@{MAP_K} on held-out photos {change}"
    ]


def describe_run(summary: dict, runs_dir: str) -> tuple[list[str], list[str]]:
    """(lines, warnings) that tell a user what a finished run did: its validation against the
    pretrained backbone, and what submit will do with it."""
    record = RunRecord.from_summary(summary, Path(runs_dir) / str(summary["run"]) / SUMMARY)
    epochs = f", best epoch {summary['best_epoch']} of {summary['epochs_run']}" if summary.get("epochs_run") else ""
    lines = [
        f"run {runs_dir}/{summary['run']} ({record.regime} regime, head {record.head}{epochs}) in "
        f"{summary['wall_seconds']:.0f}s; validation on held-out photos vs the pretrained backbone:"
    ]
    known = record.landmarks == "known"  # closed folds: no landmark is held out whole
    lines += [
        f"  {line}"
        for line in describe({g: v for g, v in summary["validation"].items() if not (known and g == "unseen")})
    ]
    fusion = summary.get("label_fusion") or {}
    if record.classifier:
        lines.append(
            f"  with class posteriors fused ({record.classifier}, C={fusion['strength']:g}, weight "
            f"{fusion['weight']:g}), on held-out photos of training landmarks (what --landmarks known ranks by):"
        )
        lines += [f"  {line}" for line in describe(fusion["validation"])]
    lines += describe_gate(fusion.get("gated") or {})
    chosen = summary.get("postprocess") or {}
    if chosen:
        gain = chosen["against_none"][chosen["chosen"]][f"map@{MAP_K}"]
        lines.append(
            f"  post-processing submit will run (but for --landmarks known): {chosen['chosen']}"
            + (
                f" (mAP@{MAP_K} {gain[0]:+.3f}, 90% [{gain[1]:+.3f}, {gain[2]:+.3f}] on held-out photos)"
                if gain[0]
                else ""
            )
        )
    if known:
        return lines, []  # the unseen-landmark warnings do not apply: every query's landmark trains
    unseen = record.unseen
    if unseen.beats is None:
        return lines, [
            "too few photos to tell whether training helps landmarks it has not seen; compete submit will use "
            "the pretrained backbone for this run (--if-worse keep to override)"
        ]
    if unseen.beats is False:
        how = (
            "clearly lower"
            if unseen.verdict is Verdict.WORSE
            else "lower, though within the interval (no clear difference)"
        )
        return lines, [
            f"on held-out landmarks the run's mAP@10 was {how} than the pretrained backbone's; compete submit "
            "will use the backbone instead, the safer choice for landmarks it has not seen (--if-worse "
            "keep|ensemble to override)"
        ]
    return lines, []
