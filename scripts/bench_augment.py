"""Benchmark `compete augment`: images/s with 1 worker and with every core, in one run.

Each setting writes the same jobs into its own fresh folder (default recipe), so the
ratio compares like with like. Also prints the peak resident memory of the parent and of
the largest worker, which must not grow with the number of classes.

    python scripts/bench_augment.py                  # small generated set
    python scripts/bench_augment.py --classes 40     # memory must stay flat as classes grow
    python scripts/bench_augment.py --data data/sample --target 100
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.sample import SampleConfig, make_sample_competition


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def children_rss_mib() -> list[float]:
    """Memory of this process's children (the pool workers): proportional set size, from /proc.

    PSS counts shared pages (libtorch, which albumentations imports) once across workers,
    so it says what each worker really adds."""
    sizes = []
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                status = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            sizes += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("Pss:")]
    return sizes


class WorkerMemory(threading.Thread):
    """Samples the workers' memory while a run goes on; keeps the largest seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.largest, self.done = 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.largest = max([self.largest, *children_rss_mib()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="competition folder (default: a generated 10-class set)")
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--target", type=int, default=60, help="images per class, originals included")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--classes", type=int, default=10, help="classes in the generated set")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    try:
        root = (
            Path(args.data)
            if args.data
            else make_sample_competition(
                scratch / "data", SampleConfig(seen_classes=args.classes, unseen_classes=2), progress=False
            )
        )
        recipe = load_recipe(args.recipe, target_per_class=args.target)
        print(f"recipe {recipe.name}, {args.target}/class, output {recipe.output_size}px, data {root}")
        rates = {}
        for workers in args.workers:
            out = scratch / f"out-{workers}"
            memory = WorkerMemory()
            memory.start()
            started = time.perf_counter()
            result = augment_competition(root, recipe, out, workers=workers, progress=False)
            elapsed = time.perf_counter() - started
            memory.done.set()
            rates[workers] = result.written / elapsed
            print(
                f"workers={workers:<3} {result.written} images in {elapsed:6.1f}s = {rates[workers]:6.1f} img/s   "
                f"peak RSS: parent {peak_rss_mib():.0f} MiB, largest worker (PSS) {memory.largest:.0f} MiB"
            )
            shutil.rmtree(out)
        low, high = min(rates), max(rates)
        print(f"speed-up {high} vs {low} worker(s): {rates[high] / rates[low]:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
