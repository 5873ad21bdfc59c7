"""Batched image embedding with test-time augmentation and an on-disk cache.

The cache keys each vector by (file path, size on disk, modification and status-change
time), so a cache survives new files being added and never serves a vector for a changed
photo.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from competition.data.dataset import ViewsDataset, loader_workers
from competition.errors import CompeteError
from competition.io import atomic_path

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported); plain float32 on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def file_key(path: Path) -> str:
    """Path, size, modification and status-change time: a photo replaced by another of the same
    size and modification time (cp -p, an unpacked archive) still changes its ctime."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"


class FeatureStore:
    """A dict of key -> vector persisted as one .npz; saved atomically."""

    def __init__(self, file: str | Path | None):
        self.file = Path(file) if file else None
        self.vectors: dict[str, np.ndarray] = {}
        if self.file and self.file.exists():
            try:
                with np.load(self.file, allow_pickle=False) as data:
                    self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))
            except (OSError, ValueError, KeyError):
                log.warning("%s: unreadable feature cache, recomputing", self.file)

    def save(self) -> None:
        if not self.file or not self.vectors:
            return
        keys = list(self.vectors)
        with atomic_path(self.file) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))


SAVE_EVERY = 200  # batches between cache saves, so a killed run loses little


@torch.no_grad()
def extract_features(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[str | Path],
    image_size: int,
    device: torch.device,
    cache_file: str | Path | None = None,
    batch_size: int = 32,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    resize: str = "square",
    normalize_views: bool = True,
    strict: bool = False,
    description: str = "embedding",
    progress: bool = True,
    workers: int = -1,
) -> tuple[np.ndarray, list[Path]]:
    """Vectors for `paths` (rows in order) and the list of files that could not be read.

    Test-time views: the photo resized to each scale of `image_size` from its own pixels
    (`resize` square, or aspect-preserving with one photo per batch), each also mirrored
    when `flip`; each view is L2-normalised before averaging so no view dominates. An
    unreadable file gets a zero vector and is reported. Vectors computed before an
    interruption stay in the cache.
    """
    paths = [Path(p) for p in paths]
    store = FeatureStore(cache_file)
    tta_tag = f"|s{image_size}|f{int(flip)}|{','.join(map(str, scales))}|{resize}"
    keys = [file_key(p) + tta_tag if p.exists() else f"{p}|missing" for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in store.vectors]
    failed: list[Path] = []
    if todo:
        dataset = ViewsDataset([paths[i] for i in todo], image_size, scales, resize)
        loader = DataLoader(
            dataset,
            batch_size=batch_size if resize == "square" else 1,
            num_workers=loader_workers(workers),
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        batches = tqdm(loader, desc=description, disable=not progress, unit="batch")
        try:
            for batch, (views, _, indices, ok) in enumerate(batches):
                outputs = []
                for images in views:
                    images = images.to(device, non_blocking=True)
                    if device.type == "cuda":
                        images = images.contiguous(memory_format=torch.channels_last)
                    with autocast_for(device):
                        outputs.append(model_fn(images).float())
                        if flip:
                            outputs.append(model_fn(torch.flip(images, dims=[-1])).float())
                if normalize_views and len(outputs) > 1:
                    outputs = [F.normalize(o, dim=-1) for o in outputs]
                vectors = torch.stack(outputs).mean(0).cpu().numpy().astype(np.float32)
                for row, index, good in zip(vectors, indices.tolist(), ok.tolist()):
                    source = todo[index]
                    if good:
                        store.vectors[keys[source]] = row
                    else:
                        failed.append(paths[source])
                        store.vectors.pop(keys[source], None)
                if (batch + 1) % SAVE_EVERY == 0:
                    store.save()
        finally:
            store.save()
    if failed and strict:
        raise CompeteError(f"unreadable image(s): {', '.join(map(str, failed[:5]))}")
    for path in failed:
        log.warning("%s: unreadable image, given a zero vector", path)
    dim = next(iter(store.vectors.values())).shape[0] if store.vectors else 0
    zero = np.zeros(dim, np.float32)
    return np.stack([store.vectors.get(k, zero) for k in keys]) if keys else np.zeros((0, dim), np.float32), failed
