"""What a GPU must do for compete, checked in one go: one line per check, PASS, FAIL or SKIP.

    bash scripts/gpu_check.sh            # on a machine with CUDA (about 5 minutes on one GPU)
    bash scripts/gpu_check.sh --cpu      # the checks' own code on the CPU (tests this script)

Checks: mixed-precision training in both regimes (ArcFace and sub-center ArcFace, fp16 with its
loss scaler and bf16; every loss finite), --compile on and off, DDP with 2 processes when 2 GPUs
exist (lite0 and a ConvNeXt), faiss GPU against CPU (exact and IVF recall@100), k = 3000 and
--index ivfpq at 1280-d, an aspect-batched embedding at batch 64 against batch 1, a submission
on the GPU in mixed precision against the CPU in float32, float16 rows in the store, and the
class prototypes' sparse posteriors and exact search (where faiss is the CPU build) made by torch
on the GPU against numpy's and faiss's. Where
something is missing (a GPU, a second GPU, faiss's GPU build) its checks say SKIP and why.
The exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class Skip(Exception):
    """A check that cannot run here, and why."""


@dataclass
class Context:
    device: torch.device
    folder: Path
    pretrained: bool
    data: Path = field(init=False)


CHECKS: list[tuple[str, Callable[[Context], str], int]] = []  # name, check, GPUs it needs


def check(name: str, gpus: int = 1):
    def register(function):
        CHECKS.append((name, function, gpus))
        return function

    return register


def _train(ctx: Context, name: str, **settings) -> Path:
    from competition.settings.train import TrainConfig
    from competition.train.loop import train

    config = dict(
        data=str(ctx.data), runs_dir=str(ctx.folder / "runs"), run_name=name, image_size=64, batch_size=8,
        epochs=2, use_augmented=False, pretrained=ctx.pretrained, device=str(ctx.device), workers=0,
    ) | settings  # fmt: skip
    train(TrainConfig(**config), progress=False)
    return ctx.folder / "runs" / name


def _finite_losses(run: Path) -> str:
    import pandas as pd

    losses = pd.read_csv(run / "metrics.csv")["loss"].dropna().to_numpy()
    if not len(losses) or not np.isfinite(losses).all():
        raise AssertionError(f"losses {losses.tolist()}")
    return f"losses {losses.min():.3f}..{losses.max():.3f}"


def _training(regime: str, head: str, precision: str):
    def run(ctx: Context) -> str:
        return _finite_losses(
            _train(ctx, f"{regime}-{head}-{precision}", regime=regime, head=head, precision=precision)
        )

    return run


for _regime in ("last", "full"):
    for _head, _precision in (("arcface", "fp16"), ("arcface", "bf16"), ("subcenter-arcface", "fp16"),
                              ("subcenter-arcface", "bf16")):  # fmt: skip
        check(f"train {_regime} {_head} {_precision}")(_training(_regime, _head, _precision))


@check("compile on and off")
def _compile(ctx: Context) -> str:
    eager = _finite_losses(_train(ctx, "eager", regime="full", epochs=1, compile=False))
    fused = _finite_losses(_train(ctx, "compiled", regime="full", epochs=1, compile=True))
    return f"eager {eager}; compiled {fused}"


def _ddp(backbone: str):
    def run(ctx: Context) -> str:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        command = torchrun + [
            "-m", "competition.cli", "--quiet", "train", "--name", f"ddp-{backbone}", "--data", str(ctx.data),
            "--runs-dir", str(ctx.folder / "runs"), "--regime", "full", "--backbone", backbone, "--epochs", "2",
            "--image-size", "64", "--batch-size", "4", "--no-augmented", "--no-pretrained", "--workers", "0",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise AssertionError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
        return _finite_losses(ctx.folder / "runs" / f"ddp-{backbone}")

    return run


check("ddp 2 processes efficientnet_lite0", gpus=2)(_ddp("efficientnet_lite0"))
check("ddp 2 processes convnext_atto", gpus=2)(_ddp("convnext_atto"))


def _faiss_gpus(ctx: Context) -> None:
    from competition.retrieval.search import _gpu_count

    if ctx.device.type == "cuda" and not _gpu_count():
        raise Skip("faiss is the CPU build (pip install faiss-gpu-cu12 in its place)")


def _clustered(count: int, dim: int, seed: int) -> np.ndarray:
    """Photos of landmarks: around 500 centres, as real galleries are (uniform noise is IVF's worst case)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(500, dim)).astype(np.float32)
    return centres[rng.integers(0, 500, count)] + 0.5 * rng.normal(size=(count, dim)).astype(np.float32)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


@check("faiss gpu vs cpu exact and ivf recall@100")
def _faiss_recall(ctx: Context) -> str:
    from competition.retrieval.search import build_index, search_index
    from competition.retrieval.vectors import l2_normalize

    _faiss_gpus(ctx)
    gallery, queries = _clustered(60_000, 256, 0), l2_normalize(_clustered(1000, 256, 1))
    on_gpu = ctx.device.type == "cuda"
    lines = []
    for kind, least in (("exact", 0.999), ("ivf", 0.99)):
        truth = search_index(build_index(gallery, kind, use_gpu=False, k=100), queries, 100)[1]
        found = search_index(build_index(gallery, kind, use_gpu=on_gpu, k=100), queries, 100)[1]
        recall = _recall(found, truth)
        if recall < least:
            raise AssertionError(f"{kind}: GPU recall@100 of the CPU's {recall:.4f} < {least}")
        lines.append(f"{kind} {recall:.4f}")
    return ", ".join(lines)


@check("exact search by torch where faiss is the CPU build")
def _torch_exact(ctx: Context) -> str:
    from competition.retrieval.device_search import DeviceExactIndex
    from competition.retrieval.search import _gpu_count, build_index, search_index
    from competition.retrieval.vectors import l2_normalize

    if ctx.device.type == "cuda" and _gpu_count():
        raise Skip("faiss's GPU build searches on the GPU itself")
    gallery, queries = _clustered(200_000, 1280, 6), l2_normalize(_clustered(5000, 1280, 7))
    timed = {}
    for where, use_gpu in (("cpu", False), ("device", None)):
        started = time.perf_counter()
        index = build_index(gallery, "exact", use_gpu=use_gpu, k=1000)
        timed[where] = (search_index(index, queries, 1000)[1], time.perf_counter() - started, index)
    if ctx.device.type == "cuda" and not isinstance(timed["device"][2], DeviceExactIndex):
        raise AssertionError(f"a {type(timed['device'][2]).__name__} instead of torch's exact search")
    recall = _recall(timed["device"][0], timed["cpu"][0])
    if recall < 0.999:
        raise AssertionError(f"recall@1000 of faiss's CPU search {recall:.4f}")
    seconds = f"{timed['device'][1]:.1f} s vs faiss CPU {timed['cpu'][1]:.1f} s"
    return f"200k x 5k queries, top-1000: {seconds}, recall {recall:.4f}"


@check("faiss k=3000 and ivfpq at 1280-d")
def _faiss_limits(ctx: Context) -> str:
    from competition.retrieval.search import GPU_FROM, build_index, search_index
    from competition.retrieval.vectors import l2_normalize

    _faiss_gpus(ctx)
    gallery = _clustered(GPU_FROM, 1280, 2)
    queries = l2_normalize(_clustered(200, 1280, 3))
    deep = search_index(build_index(gallery, "exact", k=3000), queries, 3000)[1]
    if deep.shape != (200, 3000) or (deep < 0).any():
        raise AssertionError(f"k=3000: {deep.shape}, {(deep < 0).sum()} missing")
    # the fewest photos that train 256 centres a code part (faiss trains them on the CPU first)
    gallery = gallery[:10_000]
    truth = search_index(build_index(gallery, "exact", use_gpu=False, k=100), queries, 100)[1]
    pq = build_index(gallery, "ivfpq", k=100, use_gpu=ctx.device.type == "cuda")
    found = search_index(pq, queries, 100)[1]
    return f"k=3000 whole; ivfpq {type(pq).__name__} recall@100 vs exact {_recall(found, truth):.3f}"


@check("prototype posteriors on the device vs numpy, 20k x 10k landmarks")
def _prototype_posteriors(ctx: Context) -> str:
    from competition.retrieval.posteriors import LabelClassifier
    from competition.retrieval.vectors import l2_normalize

    prototypes = l2_normalize(_clustered(10_000, 1280, 4))
    classifier = LabelClassifier([str(c) for c in range(10_000)], 100 * prototypes, np.zeros(10_000, np.float32),
                                 strength=100.0, prototypes=prototypes)  # fmt: skip
    photos = _clustered(20_000, 1280, 5)
    started = time.perf_counter()
    expected = classifier.posteriors(photos)
    on_numpy = time.perf_counter() - started
    started = time.perf_counter()
    made = classifier.posteriors(photos, device=ctx.device)
    on_device = time.perf_counter() - started
    moved = ((made > 0) != (expected > 0)).nnz / expected.nnz  # top classes kept by one only (near ties)
    largest = float(abs(made - expected).max())
    if moved > 1e-4 or largest > 1e-3:
        raise AssertionError(f"top classes differing {moved:.5f}, largest posterior difference {largest:.2e}")
    return f"{ctx.device.type} {on_device:.1f} s vs numpy {on_numpy:.1f} s; largest difference {largest:.1e}"


def _photos(ctx: Context) -> list[Path]:
    from competition.data.discover import discover_competition

    found = discover_competition(ctx.data)
    return [r.path for r in found.query + found.gallery]


@check("aspect batch 64 vs batch 1 top-1")
def _aspect_batches(ctx: Context) -> str:
    from competition.models.embedder import build_embedder
    from competition.models.view import model_view
    from competition.retrieval.embed import Extraction, extract_features
    from competition.retrieval.neighbours import leave_one_out_ranking
    from competition.settings.model import ModelSettings

    settings = ModelSettings(backbone="efficientnet_lite0", pretrained=ctx.pretrained, resize="aspect", image_size=96)
    embedder, _ = build_embedder(settings)
    embedder.to(ctx.device).eval()
    view = model_view(settings, device=ctx.device, precision="auto")
    photos = _photos(ctx)
    ranked = [
        leave_one_out_ranking(
            extract_features(
                embedder.pooled,
                photos,
                view,
                ctx.device,
                None,
                how=Extraction(batch_size=batch, progress=False, workers=0),
            )[0],
            1,
        )[:, 0]  # fmt: skip
        for batch in (64, 1)
    ]
    agreement = float((ranked[0] == ranked[1]).mean())
    if agreement < 0.98:
        raise AssertionError(f"top-1 agreement {agreement:.3f} < 0.98")
    return f"top-1 agreement {agreement:.3f} over {len(photos)} photos"


def _submit(ctx: Context, name: str, device: str, precision: str) -> dict:
    from competition.settings.submit import SubmitConfig
    from competition.submit.run import submit

    config = SubmitConfig(
        data=str(ctx.data), model=["efficientnet_lite0"], runs_dir=str(ctx.folder / f"runs-{name}"),
        submissions_dir=str(ctx.folder / "subs"), leaderboard=str(ctx.folder / "board.md"), name=name,
        device=device, precision=precision, workers=0, image_size=96,
    )  # fmt: skip
    return submit(config, progress=False).scores or {}


@check("gpu amp vs cpu float32 mAP@10")
def _amp_vs_fp32(ctx: Context) -> str:
    if not ctx.pretrained:
        raise Skip("no pretrained lite0 weights here: random features rank by chance")
    amp = _submit(ctx, "amp", str(ctx.device), "auto")["map@10"]
    exact = _submit(ctx, "fp32", "cpu", "fp32")["map@10"]
    if abs(amp - exact) > 0.01:
        raise AssertionError(f"mAP@10 {amp:.4f} (GPU, auto precision) vs {exact:.4f} (CPU, float32)")
    return f"mAP@10 {amp:.4f} vs {exact:.4f}"


@check("float16 store rows")
def _float16_store(ctx: Context) -> str:
    stores = [np.load(f, mmap_mode="r") for f in (ctx.folder / "runs-amp").rglob("*.vectors.npy")]
    if not stores:
        stores = [np.load(f, mmap_mode="r") for f in (ctx.folder / "runs").rglob("*.vectors.npy")]
    if not stores:
        raise Skip("no store was written by the checks before")
    kinds = {str(s.dtype) for s in stores}
    if kinds != {"float16"} or not all(np.isfinite(np.asarray(s, np.float32)).all() for s in stores):
        raise AssertionError(f"store rows of {kinds}")
    return f"{sum(len(s) for s in stores)} rows in {len(stores)} chunks, float16, finite"


def _pretrained_weights() -> bool:
    from competition.models.embedder import build_embedder
    from competition.settings.model import ModelSettings

    try:
        build_embedder(ModelSettings(backbone="efficientnet_lite0", pretrained=True))
    except Exception:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="Run the checks on the CPU (tests this script).")
    parser.add_argument("--only", default="", help="Run only the checks whose name holds this text.")
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    device = torch.device("cpu" if args.cpu or not gpus else "cuda")
    if gpus:
        print(f"GPU: {torch.cuda.get_device_name(0)} x{gpus}, compute capability "
              f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}, torch {torch.__version__}")  # fmt: skip
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        ctx = Context(device, Path(folder), pretrained=False)
        for name, run, needs in CHECKS:
            if args.only not in name:
                continue
            started, verdict = time.time(), "SKIP"
            try:
                if not args.cpu and gpus < needs:
                    raise Skip(f"needs {needs} CUDA GPU(s), {gpus} here")
                if needs > 1 and args.cpu:
                    raise Skip("several GPUs are checked only where they are")
                if not hasattr(ctx, "data"):
                    _prepare(ctx)
                detail, verdict = run(ctx), "PASS"
            except Skip as why:
                detail = str(why)
            except Exception as error:  # a check that fails says why in one line, and the others still run
                verdict, detail = "FAIL", f"{type(error).__name__}: {_last_line(error)}"
            counts[verdict] += 1
            took = f" [{time.time() - started:.0f}s]" if verdict != "SKIP" else ""
            print(f"{verdict} {name}: {detail}{took}", flush=True)
    print(f"gpu_check: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP")
    return 1 if counts["FAIL"] else 0


def _last_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1][:300] if text else ""


def _prepare(ctx: Context) -> None:
    """The small competition every check shares (made once, on the first check that runs)."""
    from competition.data.sample import SampleConfig, make_sample_competition

    ctx.pretrained = _pretrained_weights()
    config = SampleConfig(seen_classes=6, unseen_classes=3, train_per_class=8, query_per_class=2,
                          gallery_per_class=4, size=128, seed=5)  # fmt: skip
    ctx.data = make_sample_competition(ctx.folder / "competition", config, progress=False)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], check=False)
    sys.exit(main())
