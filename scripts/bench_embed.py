"""Benchmark embedding and the last-layer regime against their raw compute, measured side by side.

1. `extract_features` over photos on disk (decode, resize, batches, the store) vs the raw
   forward of the same model on tensors already in memory: the pipeline's overhead.
2. One last-layer training epoch on cached features vs one pass computing those features:
   why the last-layer regime caches them.

    python scripts/bench_embed.py --photos 320            # the embedded sample set (made if missing)
    python scripts/bench_embed.py --data ../shared/realdev
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from competition.data.discover import discover_competition
from competition.data.sample import make_sample_competition
from competition.models.embedder import EmbedderConfig, build_embedder
from competition.retrieval.embed import extract_features, pick_device
from competition.train.config import TrainConfig
from competition.train.last_layer import train_projection
from competition.train.loop import prepare_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--photos", type=int, default=320)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not args.data.exists():
        make_sample_competition(args.data, progress=False)
    found = discover_competition(args.data)
    paths = [r.path for r in found.train][: args.photos]
    device = pick_device()
    embedder, _ = build_embedder(EmbedderConfig(backbone=args.backbone))
    embedder.to(device).eval()
    size = EmbedderConfig(backbone=args.backbone).resolved_image_size()
    batch = torch.rand(args.batch_size, 3, size, size, device=device)

    def raw_pass() -> float:
        with torch.no_grad():
            started = time.perf_counter()
            for _ in range(0, len(paths), args.batch_size):
                embedder.pooled(batch)
            return time.perf_counter() - started

    def pipeline_pass(folder: Path) -> float:
        started = time.perf_counter()
        extract_features(
            embedder.pooled, paths, size, device, cache_dir=folder, batch_size=args.batch_size, progress=False
        )
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as scratch:
        raw_pass()  # warm-up; then each measured twice, alternating, best kept (this machine is noisy)
        timings = [(raw_pass(), pipeline_pass(Path(scratch) / f"{repeat}.store")) for repeat in range(2)]
        raw, pipeline = min(t[0] for t in timings), min(t[1] for t in timings)
        config = TrainConfig(
            data=str(args.data),
            backbone=args.backbone,
            head="softmax",
            runs_dir=scratch,
            run_name="bench",
            use_augmented=False,
            batch_size=64,
        )
        run = prepare_run(config, progress=False)
        features = run.pretrained_features(run.data.photos, "features")  # cached for the epoch below
        x = torch.from_numpy(np.stack(list(features.values()))).to(device)
        labels = np.array([r.label for r in run.data.photos if r.path in features], dtype=object)
        started = time.perf_counter()
        train_projection(run, x, labels, epochs=1)
        epoch_cached = time.perf_counter() - started
        started = time.perf_counter()
        extract_features(
            embedder.pooled, [r.path for r in run.data.photos], size, device, batch_size=64, progress=False
        )
        epoch_computing = time.perf_counter() - started
    n, photos = len(paths), len(run.data.photos)
    print(f"{platform.machine()} {device.type}, {torch.get_num_threads()} threads, {args.backbone} at {size} px")
    print("| measurement | time (s) | images/s | ratio |")
    print("|---|---|---|---|")
    print(f"| raw forward on tensors in memory, {n} images | {raw:.1f} | {n / raw:.1f} | 1× |")
    print(
        f"| extract_features from photos on disk, {n} images | {pipeline:.1f} | {n / pipeline:.1f} | "
        f"{raw / pipeline:.2f}× the raw throughput |"
    )
    print(
        f"| last-layer epoch on cached features, {photos} photos | {epoch_cached:.2f} | "
        f"{photos / epoch_cached:.0f} | {epoch_cached / epoch_computing:.4f}× the epoch below |"
    )
    print(
        f"| an epoch computing those features, {photos} photos | {epoch_computing:.1f} | "
        f"{photos / epoch_computing:.1f} | 1× |"
    )


if __name__ == "__main__":
    main()
