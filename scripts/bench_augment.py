"""Benchmark `compete augment`: images/s with 1 worker and with every core, in one run.

Each setting writes the same jobs into its own fresh folder (default recipe), so the
ratio compares like with like. Also prints the peak resident memory of the parent and of
the largest worker, which must not grow with the number of classes.

    python scripts/bench_augment.py                  # small generated set
    python scripts/bench_augment.py --data data/sample --target 100
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.sample import SampleConfig, make_sample_competition


def peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="competition folder (default: a generated 10-class set)")
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--target", type=int, default=60, help="images per class, originals included")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    try:
        root = Path(args.data) if args.data else make_sample_competition(
            scratch / "data", SampleConfig(seen_classes=10, unseen_classes=2), progress=False)
        recipe = load_recipe(args.recipe, target_per_class=args.target)
        print(f"recipe {recipe.name}, {args.target}/class, output {recipe.output_size}px, data {root}")
        rates = {}
        for workers in args.workers:
            out = scratch / f"out-{workers}"
            started = time.perf_counter()
            result = augment_competition(root, recipe, out, workers=workers, progress=False)
            elapsed = time.perf_counter() - started
            rates[workers] = result.written / elapsed
            print(f"workers={workers:<3} {result.written} images in {elapsed:6.1f}s = {rates[workers]:6.1f} img/s   "
                  f"peak RSS parent {peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB, "
                  f"largest worker {peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB")
            shutil.rmtree(out)
        low, high = min(rates), max(rates)
        print(f"speed-up {high} vs {low} worker(s): {rates[high] / rates[low]:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
