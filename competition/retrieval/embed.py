"""Batched image embedding with test-time augmentation and an on-disk cache.

The cache keys each vector by (file path, size on disk, modification and status-change
time), so a cache survives new files being added and never serves a vector for a changed
photo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from competition.data.dataset import ViewsDataset, loader_workers, quiet_worker
from competition.data.features import is_feature_row, read_rows
from competition.device import autocast_as, batch_for
from competition.distributed import Distributed
from competition.errors import CompeteError
from competition.io import counted
from competition.progress import steps
from competition.retrieval.store import EmbeddingStore
from competition.settings.model import View

log = logging.getLogger(__name__)


def file_key(path: Path) -> str:
    """Path, size, modification and status-change time: a photo replaced by another of the same
    size and modification time (cp -p, an unpacked archive) still changes its ctime."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"


@dataclass(frozen=True)
class Extraction:
    """How photos are embedded here: in batches of up to `batch_size`, loaded by `workers`
    processes (-1: as many as pay), strict or not about unreadable files, with a progress bar
    named `description`, and with `shards` the torchrun processes that share the work."""

    batch_size: int = 32
    workers: int = -1
    strict: bool = False
    progress: bool = True
    description: str = "embedding"
    shards: Distributed | None = None
    rows_dtype: type = np.float32  # of rows read from a features folder (float16: as stored, half the memory)


@torch.no_grad()
def extract_features(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[str | Path],
    view: View,
    device: torch.device,
    cache_dir: str | Path | None = None,
    how: Extraction = Extraction(),
) -> tuple[np.ndarray, list[Path]]:
    """Vectors for `paths` (rows in order) and the list of files that could not be read.

    The view (models/view.py): the photo resized to each of its scales of its size from its own
    pixels (square, or aspect-preserving in batches of photos of one view shape), each also
    mirrored when it flips; the views' directions are averaged, at their mean length. An
    unreadable file gets a zero vector and is reported. Vectors computed before an
    interruption stay in the store (retrieval/store.py). With `how.shards` (the torchrun
    processes of a submit) each process embeds its share into the shared store and every
    process returns all the rows.
    Rows of a features folder (data/features.py) are read from their file, not embedded: only for
    the model whose pooled features they are, which `cache_dir` names.
    """
    paths = [Path(p) for p in paths]
    given = [i for i, p in enumerate(paths) if is_feature_row(p)]
    if given:

        def embed(photos: list[Path]) -> tuple[np.ndarray, list[Path]]:
            return extract_features(model_fn, photos, view, device, cache_dir, how)

        return _with_given_rows(paths, given, cache_dir, embed, how.rows_dtype)
    dist = how.shards or Distributed()
    if dist.active and cache_dir is None:
        raise CompeteError("several processes embed into a shared store: give a cache folder")
    store = EmbeddingStore(cache_dir)
    keys = [file_key(p) + view.key if p.exists() else f"{p}|missing" for p in paths]
    # Each rank takes its share of the whole list, then skips what is stored: dividing only what
    # is missing would differ between ranks that open the store before and after another's flush.
    todo = [i for i in range(dist.rank, len(keys), dist.world) if keys[i] not in store]
    failed: list[Path] = []
    if todo:
        dataset = ViewsDataset([paths[i] for i in todo], view.size, view.scales, view.resize)
        loader = DataLoader(
            dataset,
            batch_sampler=dataset.batches(batch_for(device, how.batch_size, max(dataset.sizes))),
            num_workers=loader_workers(how.workers),
            worker_init_fn=quiet_worker,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        batches = steps(loader, how.description, unit="batch", enabled=how.progress)
        timer = ExtractionTimer(len(todo), how.description)
        try:
            for views, _, indices, ok in batches:
                vectors = embed_fitting(model_fn, views, device, view)
                timer.batch_done(len(indices))
                for row, index, good in zip(vectors, indices.tolist(), ok.tolist()):
                    if good:
                        store.put(keys[todo[index]], row)
                    else:
                        failed.append(paths[todo[index]])
        finally:
            store.flush()  # what was computed stays, even on Ctrl-C
    if dist.active:  # every rank's chunks are on disk: read them all
        dist.barrier()
        store.reload()
        failed = [Path(p) for p in dist.gather([str(p) for p in failed])]
    if failed and how.strict:
        raise CompeteError(f"unreadable image(s): {', '.join(map(str, failed[:5]))}")
    for path in failed:
        log.warning("%s: unreadable image, given a zero vector", path)
    failed_set = set(failed)
    unreadable = {key for path, key in zip(paths, keys) if path in failed_set}
    vectors = store.stack(keys, unreadable)
    readable = np.array([key not in unreadable for key in keys], dtype=bool)
    check_vectors(vectors[readable], [p for p in paths if p not in failed_set])
    return vectors, failed


def _with_given_rows(paths: list[Path], given: list[int], cache_dir, embed, dtype) -> tuple[np.ndarray, list[Path]]:
    """Vectors for `paths`, the rows at `given` read from their features file (as `dtype` when
    they are all there is) and the photos embedded."""
    rows = read_rows([paths[i] for i in given], Path(cache_dir).name if cache_dir else None, dtype)
    photos = sorted(set(range(len(paths))) - set(given))
    if not photos:
        check_vectors(rows, [paths[i] for i in given])
        return rows, []
    embedded, failed = embed([paths[i] for i in photos])
    if embedded.shape[1] != rows.shape[1]:
        raise CompeteError(f"{paths[given[0]].parent}: rows of {rows.shape[1]} numbers, photos of {embedded.shape[1]}")
    vectors = np.empty((len(paths), rows.shape[1]), np.float32)
    vectors[given], vectors[photos] = rows, embedded
    return vectors, failed


ESTIMATE_FROM = 5_000  # photos to embed from which the time it will take is said once it is measured


class ExtractionTimer:
    """Says how long a large extraction will take, measured on its first batches after the first
    (which pays for start-up): at Google Landmarks size it is hours or days on a CPU, worth knowing
    before waiting."""

    def __init__(self, photos: int, description: str, after_batches: int = 3):
        self.photos, self.description, self.after_batches = photos, description, after_batches
        self.batches, self.done, self.started = 0, 0, 0.0

    def batch_done(self, photos: int) -> str:
        self.batches += 1
        if self.batches == 1:
            self.started = time.monotonic()
            return ""
        self.done += photos
        if self.batches != self.after_batches + 1 or self.photos < ESTIMATE_FROM:
            return ""
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        note = (
            f"{self.description}: {self.photos:,} photos at {rate:.1f} photos/s (measured on {self.done}) take "
            f"~{_duration(self.photos / rate)}; a GPU (--device cuda) or torchrun processes divide it, and what is "
            "embedded is kept if stopped"
        )
        log.warning(note)
        return note


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"


FEWEST_TO_JUDGE = 10  # photos: fewer can all look the same (solid test images, duplicates)
CHECK_ROWS = 65_536  # rows checked at once


def check_vectors(vectors: np.ndarray, paths: list[Path]) -> None:
    """Vectors that cannot rank are an error before anything is saved or written: a NaN or an
    infinity, or flat vectors (every component equal: a pooling that overflowed, GeM's p of 1e300
    gives all ones), or one vector for every photo of a real set (the model ignores its input).
    Read once, a block of rows at a time: 1.58M rows of 1280 floats are never copied whole."""
    judged = len(vectors) > 0 and vectors.shape[1] >= 2  # fewer numbers cannot be flat or alike
    finite, flat, highest, lowest, largest = [np.ones(0, bool)], True, None, None, 0.0
    for start in range(0, len(vectors), CHECK_ROWS):
        block = np.asarray(vectors[start : start + CHECK_ROWS], np.float32)
        finite.append(np.isfinite(block).all(axis=1))
        if not judged or not finite[-1].all():
            continue  # a block that is not finite is the error below: its numbers judge nothing
        magnitude = np.abs(block).max(axis=1)
        flat = flat and bool((np.ptp(block, axis=1) <= 1e-6 * magnitude).all())
        highest = block.max(axis=0) if highest is None else np.maximum(highest, block.max(axis=0))
        lowest = block.min(axis=0) if lowest is None else np.minimum(lowest, block.min(axis=0))
        largest = max(largest, float(magnitude.max()))
    finite = np.concatenate(finite)
    if not finite.all():
        raise CompeteError(
            f"the model gave {counted(int((~finite).sum()), 'photo')} a vector that is not finite (first: "
            f"{paths[int(np.argmin(finite))]}): its pooling overflowed; try a smaller --gem-p or --pooling max (on a "
            "GPU in fp16, --precision auto below compute capability 8.0, also --precision fp32)"
        )
    if not judged:
        return
    if flat:
        raise CompeteError(
            "the model gave every photo a flat vector (all its components equal): its pooling overflowed or "
            "its weights are broken; try a smaller --gem-p or --pooling max"
        )
    if len(vectors) >= FEWEST_TO_JUDGE and (highest - lowest).max() <= 1e-6 * largest:
        raise CompeteError(
            f"the model gave all {len(vectors)} photos the same vector, so every query would get one ranking: "
            "check its weights and pooling settings"
        )


def embed_fitting(model_fn, views: list[torch.Tensor], device: torch.device, view: View) -> np.ndarray:
    """_embed_views, a batch that runs out of GPU memory (large test-time views, a ViT) split in
    halves until it fits: the same rows, said once per run. A single photo that does not fit is
    a one-line error."""
    try:
        return _embed_views(model_fn, views, device, view)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        photos = len(views[0])
        if photos == 1:
            raise CompeteError(
                "out of GPU memory embedding one photo: lower --scales or --image-size, or use --device cpu"
            ) from None
        if not _halved:
            log.warning("out of GPU memory at %d photos a batch: embedding in smaller batches", photos)
            _halved.append(photos)
        half = photos // 2
        return np.concatenate(
            [
                embed_fitting(model_fn, [v[part] for v in views], device, view)
                for part in (slice(0, half), slice(half, None))
            ]
        )


_halved: list[int] = []  # a batch was split in this process: said once


def _embed_views(model_fn, views: list[torch.Tensor], device: torch.device, view: View) -> np.ndarray:
    """One batch: every view (scales, and mirrored when the view flips) through the model, averaged."""
    outputs = []
    for images in views:
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_as(view.half):
            outputs.append(model_fn(images).float())
            if view.flip:
                outputs.append(model_fn(torch.flip(images, dims=[-1])).float())
    if len(outputs) > 1:
        # the views' directions averaged, at their mean length: a last-layer run's linear projection
        # was trained on one view's pooled features, and its bias makes it care about their length
        length = torch.stack([o.norm(dim=-1, keepdim=True) for o in outputs]).mean(0)
        return (torch.stack([F.normalize(o, dim=-1) for o in outputs]).mean(0) * length).cpu().numpy()
    return torch.stack(outputs).mean(0).cpu().numpy().astype(np.float32)
