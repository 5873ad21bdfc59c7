"""Benchmark embedding and the last-layer regime against their raw compute, measured side by side.

1. `extract_features` over photos on disk (decode, resize, batches, the store) vs the raw
   forward of the same model on tensors already in memory: the pipeline's overhead.
2. One last-layer training epoch on cached features vs one pass computing those features:
   why the last-layer regime caches them.
3. Aspect-preserving views of photos of many shapes (--aspect-data, default
   ../shared/realdev-hr when present): one photo per batch vs batches of photos of one view
   shape, with the largest difference between their vectors.

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
from competition.device import batch_for, pick_device
from competition.models.embedder import build_embedder
from competition.models.view import model_view
from competition.retrieval.embed import Extraction, extract_features
from competition.settings.model import ModelSettings
from competition.settings.train import TrainConfig
from competition.train.last_layer import train_projection
from competition.train.loop import prepare_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--photos", type=int, default=320)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--aspect-data", type=Path, default=Path("../shared/realdev-hr"))
    args = parser.parse_args()
    if not args.data.exists():
        make_sample_competition(args.data, progress=False)
    found = discover_competition(args.data)
    paths = [r.path for r in found.train][: args.photos]
    device = pick_device()
    model = ModelSettings(backbone=args.backbone)
    embedder, _ = build_embedder(model)
    embedder.to(device).eval()
    square = model_view(model, resize="square")
    size = square.size
    effective = batch_for(device, args.batch_size, size)  # as extract_features batches
    batch = torch.rand(effective, 3, size, size, device=device)

    def raw_pass() -> float:
        with torch.no_grad():
            started = time.perf_counter()
            for _ in range(0, len(paths), effective):
                embedder.pooled(batch)
            return time.perf_counter() - started

    def pipeline_pass(folder: Path) -> float:
        started = time.perf_counter()
        extract_features(
            embedder.pooled,
            paths,
            square,
            device,
            cache_dir=folder,
            how=Extraction(batch_size=args.batch_size, progress=False),
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
            embedder.pooled,
            [r.path for r in run.data.photos],
            square,
            device,
            how=Extraction(batch_size=64, progress=False),
        )
        epoch_computing = time.perf_counter() - started
    aspect_rows = aspect_batching(embedder, args, device) if args.aspect_data.exists() else []
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
    for row in aspect_rows:
        print(row)


def aspect_batching(embedder, args, device) -> list[str]:
    """Aspect views one photo per batch vs batched by view shape: time and the vectors' difference."""
    found = discover_competition(args.aspect_data, need_train=False)
    paths = [r.path for r in found.gallery + found.query][: args.photos]
    view = model_view(ModelSettings(backbone=args.backbone))  # the default aspect view

    def timed(batch_size: int) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        vectors, _ = extract_features(
            embedder.pooled, paths, view, device, how=Extraction(batch_size=batch_size, progress=False)
        )
        return time.perf_counter() - started, vectors

    timed(1)  # warm-up; then each measured twice, alternating, best kept (as above)
    runs = [(timed(1), timed(args.batch_size)) for _ in range(2)]
    (alone_s, alone), (batched_s, batched) = (
        min((r[0] for r in runs), key=lambda t: t[0]),
        min((r[1] for r in runs), key=lambda t: t[0]),
    )
    difference = float(np.abs(alone - batched).max() / np.abs(alone).max())
    n = len(paths)
    return [
        f"| aspect views ({view.size} px longer side), one photo per batch, {n} photos of "
        f"{args.aspect_data.name} | {alone_s:.1f} | {n / alone_s:.1f} | 1× |",
        f"| the same, batched by view shape (up to {batch_for(device, args.batch_size, view.size)}) | "
        f"{batched_s:.1f} | "
        f"{n / batched_s:.1f} | "
        f"{alone_s / batched_s:.2f}× the throughput; vectors differ by at most {difference:.1e} (relative) |",
    ]


if __name__ == "__main__":
    main()
