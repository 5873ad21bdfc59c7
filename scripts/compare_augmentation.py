"""Effect of the augmentation recipe on retrieval: none vs light vs heavy (vs any preset).

Same backbone, same seed, same training settings; only the augmented folder changes.
Prints one markdown table (all / seen / unseen top-1/3/10) plus wall times.

    python scripts/compare_augmentation.py --data data/sample --target 100 --regime last
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.sample import make_sample_competition
from competition.report.tables import comparison_table
from competition.retrieval.submit import SubmitConfig, submit
from competition.train.config import TrainConfig
from competition.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/sample")
    parser.add_argument("--recipes", nargs="+", default=["none", "light", "heavy"])
    parser.add_argument("--target", type=int, default=100, help="images per class, originals included")
    parser.add_argument("--regime", default="last")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default="runs/compare-augmentation")
    args = parser.parse_args()

    root = Path(args.data)
    if not (root / "train").is_dir():
        make_sample_competition(root, progress=False)
    rows = []
    for recipe_name in args.recipes:
        started = time.time()
        augmented = ""
        if recipe_name != "none":
            out = root / f"augmented-{recipe_name}-{args.target}"
            augment_competition(
                root, load_recipe(recipe_name, target_per_class=args.target), out, seed=args.seed, progress=False
            )
            augmented = str(out)
        augment_s = time.time() - started
        run_name = f"aug-{recipe_name}-{args.regime}-{args.image_size}px-s{args.seed}"
        config = TrainConfig(
            data=str(root),
            run_name=run_name,
            runs_dir=args.runs_dir,
            regime=args.regime,
            epochs=args.epochs,
            image_size=args.image_size,
            seed=args.seed,
            augmented=augmented,
            use_augmented=bool(augmented),
        )
        summary = train(config, progress=False)
        train_s = time.time() - started - augment_s
        result = submit(
            SubmitConfig(
                data=str(root),
                models=[str(Path(args.runs_dir) / run_name)],
                name=run_name,
                runs_dir=args.runs_dir,
                submissions_dir=args.runs_dir,
                leaderboard=str(Path(args.runs_dir) / "leaderboard.md"),
            ),
            progress=False,
        )
        label = f"{recipe_name} ({args.target}/class)" if augmented else "none (originals only)"
        rows.append(
            (
                f"{label}: augment {augment_s:.0f}s, train {train_s:.0f}s, "
                f"val unseen {summary['best'].get('unseen_top1', float('nan')):.3f}",
                result.scores or {},
            )
        )
        print(comparison_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(comparison_table(rows))


if __name__ == "__main__":
    main()
