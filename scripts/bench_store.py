"""Benchmark the embedding store against the one-file cache it replaced: write and read time.

Both write N 512-d vectors in batches of 32 as extraction does (the old cache saved its
whole dict every 200 batches; the store appends chunks), then open the result and read
every vector back. Linear growth shows as a constant time per vector.

    python scripts/bench_store.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from competition.retrieval.store import EmbeddingStore

BATCH, SAVE_EVERY = 32, 200  # the old cache: a whole-file save every 200 batches


def old_cache(path: Path, vectors: np.ndarray, keys: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    store: dict[str, np.ndarray] = {}
    for batch, start in enumerate(range(0, len(vectors), BATCH)):
        store.update(zip(keys[start : start + BATCH], vectors[start : start + BATCH]))
        if (batch + 1) % SAVE_EVERY == 0 or start + BATCH >= len(vectors):
            names = list(store)
            with open(path, "wb") as handle:
                np.savez(handle, keys=np.array(names), vectors=np.stack([store[k] for k in names]))
    written = time.perf_counter()
    with np.load(path) as data:
        loaded = dict(zip(data["keys"].tolist(), data["vectors"]))
    np.stack([loaded[k] for k in keys])
    return written - started, time.perf_counter() - written


def new_store(path: Path, vectors: np.ndarray, keys: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    store = EmbeddingStore(path)
    for key, vector in zip(keys, vectors):
        store.put(key, vector)
    store.flush()
    written = time.perf_counter()
    EmbeddingStore(path).stack(keys)
    return written - started, time.perf_counter() - written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--old-max", type=int, default=100_000, help="skip the old cache above this (quadratic)")
    args = parser.parse_args()
    print("| vectors | cache | write (s) | µs per vector written | read all (s) | write vs the store |")
    print("|---|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        for size in args.sizes:
            vectors = np.random.default_rng(0).standard_normal((size, 512)).astype(np.float32)
            keys = [
                f"/photos/{i:07d}.jpg|123456|1700000000000000000|1700000000000000000|s224|f1|1.0|square"
                for i in range(size)
            ]
            write, read = new_store(folder / f"{size}.store", vectors, keys)
            print(
                f"| {size:,} | store (chunks) | {write:.2f} | {write / size * 1e6:.1f} | {read:.2f} | 1× |", flush=True
            )
            if size <= args.old_max:
                old_write, old_read = old_cache(folder / f"{size}.npz", vectors, keys)
                print(
                    f"| {size:,} | one .npz, rewritten | {old_write:.2f} | {old_write / size * 1e6:.1f} | "
                    f"{old_read:.2f} | {old_write / write:.1f}× |",
                    flush=True,
                )
            shutil.rmtree(folder)
            folder.mkdir()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
