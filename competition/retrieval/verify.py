"""Geometric verification: re-rank the top of a ranking by how many local features of the
query and a gallery photo agree on one geometric transform.

Every Google Landmarks winner re-ranked this way (DELF/DELG + RANSAC, later SuperGlue):
a global vector says two photos look alike, matching local features says they show the same
building. Here the local features are OpenCV's SIFT (RootSIFT-normalised; they install with
OpenCV, no weights to download), matched with Lowe's ratio test and verified with MAGSAC++
fitting a homography. A photo's keypoints are cached beside the embeddings, keyed like them,
so a second submit re-uses them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from competition.data.images import UnreadableImage, read_image
from competition.io import atomic_path
from competition.progress import steps
from competition.retrieval.embed import file_key

log = logging.getLogger(__name__)

LOCAL_SIDE = 640  # keypoints are found on the photo at this longer side
MAX_KEYPOINTS = 1000
RATIO = 0.8  # Lowe's ratio test: the best match must be clearly better than the second
REPROJECTION_PX = 8.0  # at LOCAL_SIDE: how far an inlier may land from where the homography puts it
MIN_MATCHES = 8  # fewer ratio-test matches than this cannot be verified


@dataclass(frozen=True)
class Verification:
    """How the top of a ranking is re-ranked: the first `top` candidates of every query get
    `weight` x min(inliers, `saturation`) / `saturation` added to their global score, counting
    only `min_inliers` or more (chance agreement between unrelated photos stays below it)."""

    # Chosen on realdev-hr's training photos (leave-one-out, off the shelf) and queries together:
    # larger weights lost in both (SIFT finds few inliers across day/night, decades, viewpoints).
    top: int = 100
    weight: float = 0.1
    min_inliers: int = 8
    saturation: int = 60

    def bonus(self, inliers: np.ndarray) -> np.ndarray:
        counted = np.where(inliers >= self.min_inliers, np.minimum(inliers, self.saturation), 0)
        return self.weight * counted / self.saturation


def local_features(
    path: str | Path, side: int = LOCAL_SIDE, count: int = MAX_KEYPOINTS
) -> tuple[np.ndarray, np.ndarray]:
    """(keypoint positions Nx2, RootSIFT descriptors Nx128) of the photo at its longer side `side`."""
    image = read_image(path, needed=side)
    scale = side / max(image.shape[:2])
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    keypoints, descriptors = cv2.SIFT_create(nfeatures=count).detectAndCompute(gray, None)
    if descriptors is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    # RootSIFT (Arandjelović & Zisserman 2012): Hellinger kernel instead of Euclidean distance
    descriptors = np.sqrt(descriptors / np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7))
    return np.array([k.pt for k in keypoints], np.float32), descriptors.astype(np.float32)


def count_inliers(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int:
    """How many ratio-test matches between two photos' local features one homography explains."""
    (points_a, descriptors_a), (points_b, descriptors_b) = a, b
    if len(descriptors_a) < 2 or len(descriptors_b) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(descriptors_a, descriptors_b, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return 0
    source = points_a[[m.queryIdx for m in good]]
    target = points_b[[m.trainIdx for m in good]]
    try:
        _, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, REPROJECTION_PX)
    except cv2.error:  # degenerate matches (all on a line, one point repeated) fit no model
        return 0
    return 0 if mask is None else int(mask.sum())


class LocalFeatureCache:
    """One small .npz a photo under `folder`, named by the photo's file key (path, size, times)
    and the extraction settings, so a changed photo is never served stale keypoints. Without a
    folder they are kept in memory (small sets, tests)."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _file(self, key: str) -> Path:
        digest = hashlib.sha1(f"{key}|{LOCAL_SIDE}|{MAX_KEYPOINTS}".encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npz"

    def get(self, path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The photo's local features, computed once; `key` is `embed.file_key(path)`."""
        if self.folder is None:
            if key not in self.memory:
                self.memory[key] = local_features(path)
            return self.memory[key]
        file = self._file(key)
        if file.exists():
            try:
                with np.load(file, allow_pickle=False) as stored:
                    return stored["points"], stored["descriptors"].astype(np.float32)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
                log.warning("%s: damaged local-feature cache file, recomputed (%s)", file, error)
        points, descriptors = local_features(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, points=points, descriptors=descriptors.astype(np.float16))
        return points, descriptors


def verify_ranking(
    ranking: np.ndarray,
    scores: np.ndarray,
    query_paths: Sequence[Path],
    gallery_paths: Sequence[Path],
    settings: Verification = Verification(),
    cache_dir: str | Path | None = None,
    threads: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """`ranking` (queries x k gallery indices, best first) with each query's first
    `settings.top` re-ordered by global score + inlier bonus; `scores` are the global scores
    of `ranking`'s entries. Returns the new ranking and what it cost (seconds per query)."""
    started = time.time()
    cache = LocalFeatureCache(cache_dir)
    top = min(settings.top, ranking.shape[1])
    threads = threads or os.cpu_count() or 1
    unreadable: set[Path] = set()

    def features(path: Path):
        try:
            return cache.get(path, file_key(path))
        except (UnreadableImage, OSError):  # unreadable, or gone since it was embedded
            unreadable.add(path)
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)

    # OpenCV releases the GIL in SIFT, matching and MAGSAC: threads run them in parallel.
    # Every candidate's keypoints are computed (and cached) first; each query then reads its
    # own candidates back, so memory holds a query's worth, not a whole gallery's.
    with ThreadPoolExecutor(threads) as pool:
        needed = sorted({int(g) for g in ranking[:, :top].ravel()})
        for _ in steps(
            pool.map(features, [gallery_paths[g] for g in needed]), "local features", len(needed), enabled=progress
        ):
            pass

        def rerank(row: int) -> np.ndarray:
            query = features(query_paths[row])
            candidates = ranking[row, :top]
            inliers = np.array([count_inliers(query, features(gallery_paths[int(g)])) for g in candidates])
            order = np.argsort(-(scores[row, :top] + settings.bonus(inliers)), kind="stable")
            return candidates[order]

        rows = steps(pool.map(rerank, range(len(ranking))), "verifying", total=len(ranking), enabled=progress)
        reranked = ranking.copy()
        for row, head in enumerate(rows):
            reranked[row, :top] = head
    for path in sorted(unreadable):
        log.warning("%s: unreadable image, not verified", path)
    seconds = time.time() - started
    return reranked, {"seconds": seconds, "per_query_s": seconds / max(len(ranking), 1), "top": top}
