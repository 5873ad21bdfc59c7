"""Google Landmarks size through the real commands: `compete train` and `compete submit` on a
synthetic features folder, each in its own process, with the wall time and peak memory of each
stage as the command's own log lines mark them.

    python scripts/bench_glr_cli.py --sizes 100000 400000 1580000 --work /tmp/glr

For each size the bench writes a features folder as `compete features` writes one (float16
rows, train/query/gallery .csv, and the features.json of a real export of a few photos, so the
rows count as the default model's), then runs, each in a fresh process:

    compete train  --data F                                   (last regime, default head)
    compete submit --data F --model <run> --format kaggle     (label fusion: --landmarks auto)

Rows are unit vectors around one centre per landmark (~19 photos a landmark, as GLDv2-clean);
the gallery and the queries scale with the training set as GLDv2's 760k / 117k do with its
1.58M (0.48 and 0.074 of it), half the gallery and four in five queries of training landmarks.
A stage is the time from one line the command prints (its log or a result) to the next, with
the largest resident size sampled in it (VmRSS, every half second); a command's peak is its
VmHWM (/proc). Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PHOTOS_PER_LANDMARK = 19
GALLERY_SHARE, QUERY_SHARE = 760_000 / 1_580_000, 117_000 / 1_580_000
BLOCK = 100_000
NOISE = 3.5  # per dimension, against centres of 1: at 20k photos ~0.3 of first neighbours right, ~0.7 past the nuisance

# the command, with INFO lines of the whole package (the CLI shows training's alone when piped)
LAUNCH = (
    "import logging, sys; from competition.cli import app; "
    "logging.getLogger('competition').setLevel(logging.INFO); sys.argv[0] = 'compete'; app()"
)


def feature_identities(work: Path) -> Path:
    """features.json of `compete features` run on a few generated photos: the identities (the
    default model's feature caches) the synthetic rows then claim."""
    photos, out = work / "photos", work / "export"
    if (out / "features.json").is_file():
        return out / "features.json"
    rng = np.random.default_rng(0)
    for split, names in (("train/a", ["1", "2"]), ("train/b", ["1", "2"]), ("query", ["q"]), ("gallery", ["g"])):
        (photos / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / split / f"{name}.jpg")
    command = ["features", "--data", str(photos), "--out", str(out), "--runs-dir", str(work / "export-runs")]
    subprocess.run([sys.executable, "-c", LAUNCH, *command], check=True)
    return out / "features.json"


def write_rows(path: Path, labels: np.ndarray, centres: np.ndarray, nuisance: np.ndarray, seed: int) -> None:
    """float16 unit rows around their landmark's centre, written a block at a time (memory-mapped):
    isotropic noise, and a strong part along a few shared directions (light, viewpoint) that a
    learned whitening can learn to discount, so that training has something to win."""
    rng = np.random.default_rng(seed)
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(labels), centres.shape[1]))
    for start in range(0, len(labels), BLOCK):
        picked = centres[labels[start : start + BLOCK]]
        block = picked + NOISE * rng.standard_normal(picked.shape, dtype=np.float32)
        block += rng.standard_normal((len(picked), len(nuisance)), dtype=np.float32) @ nuisance
        rows[start : start + BLOCK] = block / np.linalg.norm(block, axis=1, keepdims=True)
    rows.flush()
    del rows


def features_folder(root: Path, size: int, dim: int, identities: Path) -> Path:
    """A features folder of `size` training rows and GLDv2's proportions of queries and gallery."""
    if (root / "features.json").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    landmarks = max(2, size // PHOTOS_PER_LANDMARK)
    centres = rng.standard_normal((2 * landmarks, dim), dtype=np.float32)  # the second half never trains
    nuisance = 0.07 * NOISE * rng.standard_normal((32, dim), dtype=np.float32)
    train = rng.integers(0, landmarks, size)
    gallery_count, query_count = round(size * GALLERY_SHARE), round(size * QUERY_SHARE)
    gallery = np.where(rng.random(gallery_count) < 0.5, rng.integers(0, landmarks, gallery_count), 0)
    gallery[gallery == 0] = rng.integers(landmarks, 2 * landmarks, int((gallery == 0).sum()))
    query = np.where(rng.random(query_count) < 0.8, rng.integers(0, landmarks, query_count), 0)
    query[query == 0] = rng.integers(landmarks, 2 * landmarks, int((query == 0).sum()))
    for seed, (split, labels) in enumerate((("train", train), ("query", query), ("gallery", gallery))):
        write_rows(root / f"{split}.npy", labels, centres, nuisance, seed)
        ids = [f"{split[0]}{i:07d}" for i in range(len(labels))]
        pd.DataFrame({"id": ids, "landmark": [f"l{label}" for label in labels]}).to_csv(
            root / f"{split}.csv", index=False
        )
    (root / "features.json").write_text(identities.read_text())  # last: the folder now reads as features
    return root


def _memory_gb(pid: int, field: str) -> float:
    """VmHWM (peak resident size so far) or VmRSS (resident now) of a process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    line = next((x for x in status.splitlines() if x.startswith(f"{field}:")), f"{field}: 0 kB")
    return int(line.split()[1]) / 1024**2


def run_stages(command: list[str], log: Path) -> tuple[list[tuple[str, float, float]], float, float, int]:
    """Run one compete command; its stages as (log line, seconds until the next line, the largest
    resident size sampled within it), and its total seconds, peak GB (VmHWM) and exit code. Every
    line also goes to `log`."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    stages: list[tuple[str, float, float]] = []
    last = [("start", started)]
    peak, in_stage = [0.0], [0.0]

    def sample() -> None:  # VmHWM vanishes with the process: keep the latest
        while child.poll() is None:
            peak[0] = max(peak[0], _memory_gb(child.pid, "VmHWM"))
            in_stage[0] = max(in_stage[0], _memory_gb(child.pid, "VmRSS"))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    with open(log, "a") as out:
        for line in child.stdout:
            out.write(line)
            out.flush()
            line = line.rstrip()
            if not line or line[0].isspace():
                continue  # a result's detail, not a step
            now = time.perf_counter()
            stages.append((last[0][0], now - last[0][1], in_stage[0]))
            last[0], in_stage[0] = (line.removeprefix("INFO: ")[:110], now), _memory_gb(child.pid, "VmRSS")
    code = child.wait()
    now = time.perf_counter()
    stages.append((last[0][0], now - last[0][1], in_stage[0]))
    return stages, now - started, peak[0], code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=1280, help="row width (lite0's pooled features: 1280)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "compete-glr-cli")
    parser.add_argument("--steps", nargs="+", default=["train", "submit"], choices=["train", "submit"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    identities = feature_identities(args.work)
    summary = []
    for size in args.sizes:
        made = time.perf_counter()
        folder = features_folder(args.work / f"features-{size}-{args.dim}", size, args.dim, identities)
        print(f"## {size:,} training rows x {args.dim}-d ({time.perf_counter() - made:.0f} s to write)", flush=True)
        runs, name = args.work / f"runs-{size}-{args.dim}", "glr"
        commands = {
            "train": ["train", "--data", str(folder), "--runs-dir", str(runs), "--name", name],
            "submit": [
                *("submit", "--data", str(folder), "--runs-dir", str(runs), "--model", str(runs / name)),
                *("--if-worse", "keep"),  # the run's own ranking and label fusion, whatever validation said
                *("--format", "kaggle", "--name", f"glr-{size}", "--submissions-dir", str(args.work / "submissions")),
                *("--leaderboard", str(args.work / "leaderboard.md")),
            ],
        }
        for step in args.steps:
            stages, seconds, peak, code = run_stages(commands[step], args.work / f"{step}-{size}-{args.dim}.log")
            print(f"\n### compete {step}: {seconds:.0f} s, peak {peak:.2f} GB, exit {code}\n", flush=True)
            print("| stage (the line that opens it) | seconds | largest resident GB in it |\n|---|---|---|")
            for line, spent, high in stages:
                if spent >= 1 or line == stages[-1][0]:
                    print(f"| {line} | {spent:.0f} | {high:.2f} |")
            summary.append((size, step, seconds, peak, code))
            if code:
                break
    print("\n| training rows | command | seconds | peak GB | exit |\n|---|---|---|---|---|")
    for size, step, seconds, peak, code in summary:
        print(f"| {size:,} | compete {step} | {seconds:.0f} | {peak:.2f} | {code} |")
    print(f"\n{os.cpu_count()} CPU cores; rows {args.dim}-d float16")


if __name__ == "__main__":
    main()
