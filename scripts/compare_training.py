"""Compare training variants on one competition: regime x loss x pooling, with wall times.

Each variant is REGIME-LOSS-POOLING (e.g. last-softmax-gem, full-arcface-avg), optionally
followed by :key=value,... settings of training (l2_sp=0.01, freeze_bn=false) or of the
submission (with_pretrained=1); the word `pretrained` adds the off-the-shelf backbone
(GeM, no training). Every variant trains with the same seed and split, is submitted on
query/gallery, and lands in one table. A run already in --runs-dir is reused.

    python scripts/compare_training.py --variants pretrained last-softmax-gem last-arcface-gem \\
        --augmented data/sample/augmented-heavy-100
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

from competition.report.tables import comparison_table
from competition.retrieval.submit import SubmitConfig, submit
from competition.train.config import TrainConfig
from competition.train.loop import train

SUBMIT_KEYS = {f.name for f in fields(SubmitConfig)}


def parse_variant(text: str) -> tuple[dict, dict]:
    """'full-softmax-gem:l2_sp=0.01,with_pretrained=1' -> (training settings, submission settings)."""
    base, _, extra = text.partition(":")
    regime, head, pooling = base.split("-")
    settings = {"regime": regime, "head": head, "pooling": pooling}
    for pair in filter(None, extra.split(",")):
        key, _, value = pair.partition("=")
        settings[key] = json.loads(value)
    submit_settings = {k: settings.pop(k) for k in list(settings) if k in SUBMIT_KEYS}
    return settings, submit_settings


def run_name(backbone: str, settings: dict, image_size: int, seed: int) -> str:
    extras = "".join(f"-{k}{v}" for k, v in settings.items() if k not in ("regime", "head", "pooling"))
    return f"{backbone}-{settings['regime']}-{settings['head']}-{settings['pooling']}{extras}-{image_size}px-s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/sample")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["pretrained", "last-softmax-gem", "last-arcface-gem", "last-softmax-avg", "full-softmax-gem"],
    )
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--augmented", default="", help="augmented folder for the last regime ('' = none)")
    parser.add_argument("--full-augmented", default="", help="augmented folder for the full regime ('' = none)")
    parser.add_argument("--last-epochs", type=int, default=30)
    parser.add_argument("--full-epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32, help="full regime (the last regime uses 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs/compare-training")
    args = parser.parse_args()

    rows = []
    common = dict(
        data=args.data,
        runs_dir=args.runs_dir,
        submissions_dir=args.runs_dir,
        leaderboard=str(Path(args.runs_dir) / "leaderboard.md"),
    )
    for variant in args.variants:
        started = time.time()
        if variant == "pretrained":
            result = submit(
                SubmitConfig(models=[args.backbone], name=f"{args.backbone}-pretrained", **common), progress=False
            )
            rows.append((f"{variant} (GeM): {time.time() - started:.0f}s", result.scores or {}))
        else:
            settings, submit_settings = parse_variant(variant)
            full = settings["regime"] == "full"
            augmented = args.full_augmented if full else args.augmented
            name = run_name(args.backbone, settings, args.image_size, args.seed)
            config = TrainConfig(
                data=args.data,
                runs_dir=args.runs_dir,
                run_name=name,
                backbone=args.backbone,
                image_size=args.image_size,
                seed=args.seed,
                augmented=augmented,
                use_augmented=bool(augmented),
                epochs=args.full_epochs if full else args.last_epochs,
                batch_size=args.batch_size if full else 64,
                **settings,
            )
            summary_file = Path(args.runs_dir) / name / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.exists() else train(config, progress=False)
            trained_s = summary["wall_seconds"]
            submission = name + "".join(f"-{k}{v}" for k, v in submit_settings.items())
            result = submit(
                SubmitConfig(
                    models=[str(Path(args.runs_dir) / name)],
                    name=submission,
                    if_worse="keep",
                    **(common | submit_settings),
                ),
                progress=False,
            )
            rows.append(
                (
                    f"{variant}: train {trained_s:.0f}s, best epoch {summary['best_epoch']}, val unseen "
                    f"{summary['baseline'].get('unseen_top1', 0):.3f}->{summary['best'].get('unseen_top1', 0):.3f}",
                    result.scores or {},
                )
            )
        print(comparison_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(comparison_table(rows))


if __name__ == "__main__":
    main()
