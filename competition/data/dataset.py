"""Torch datasets over image files; unreadable files are reported, never fatal mid-batch."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from competition.data.images import UnreadableImage, read_image, upright_size
from competition.errors import CompeteError
from competition.settings.choices import RESIZE_MODES
from competition.settings.embedding import MAX_VIEWS

MAX_VIEW_SIDE = 1024  # test-time scales beyond this add memory, not detail


# An aspect-preserving view never enlarges a photo past its own longer side, except up to
# this (the native input of most ImageNet backbones): enlarging adds no detail, only changes
# the scale the network sees (on realdev's 224 px photos, 320 px inputs lost 3 points top-1).
SMALLEST_ASPECT_SIDE = 224


def view_shape(height: int, width: int, size: int, resize: str = "square") -> tuple[int, int]:
    """(height, width) a photo is resized to: size x size, or its longer side to `size` (never
    past the photo's own, see SMALLEST_ASPECT_SIDE) with the aspect ratio kept, sides rounded
    to a multiple of 32, the stride of most backbones."""
    if resize == "square":
        return size, size
    longer = max(height, width)
    scale = min(size, max(longer, SMALLEST_ASPECT_SIDE)) / longer
    return tuple(max(32, int(round(side * scale / 32)) * 32) for side in (height, width))


def resize_to_tensor(image: np.ndarray, size: int, resize: str = "square") -> torch.Tensor:
    """The whole photo resized (no crop: a landmark at the edge stays in view), as a CHW tensor in [0, 1]."""
    return resize_to_shape(image, view_shape(*image.shape[:2], size, resize))


def resize_to_shape(image: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    height, width = shape
    interpolation = cv2.INTER_AREA if min(image.shape[:2]) > min(height, width) else cv2.INTER_CUBIC
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float().div_(255.0)


class ImageDataset(Dataset):
    """Yields (image tensor in [0, 1], label, index, ok); a bad file gives a black image and ok=False."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | None = None,
        transform: Callable[[np.ndarray], torch.Tensor] | None = None,
        size: int = 224,
    ):
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.transform = transform or (lambda image: resize_to_tensor(image, size))
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int):
        return self.transform(read_image(self.paths[index]))

    def blank(self, index: int):
        return torch.zeros(3, self.size, self.size)

    def __getitem__(self, index: int):
        try:
            tensor, ok = self.load(index), True
        except UnreadableImage:
            tensor, ok = self.blank(index), False
        return tensor, self.labels[index], index, ok


def scaled_sizes(size: int, scales: Sequence[float]) -> list[int]:
    """The input size of each test-time scale; refused when there are too many or one is absurd."""
    scales = list(scales)
    if not scales or len(scales) > MAX_VIEWS or any(not 0 < s for s in scales):
        raise CompeteError(f"scales must be 1 to {MAX_VIEWS} positive numbers, not {scales}")
    sizes = [max(32, int(round(size * s))) for s in scales]
    if max(sizes) > MAX_VIEW_SIDE:
        raise CompeteError(f"scale {max(scales):g} makes {max(sizes)} px inputs; the limit is {MAX_VIEW_SIDE} px")
    return sizes


class ViewsDataset(ImageDataset):
    """Each photo decoded once and resized to every test-time scale from its own pixels
    (as cirtorch does), so a larger scale sees real detail, not an upsampled tensor.

    Every view's shape is planned from the file's header before any decoding, so photos can
    be batched by shape (`batches`): an aspect-preserving view then fills a GPU batch and
    gives the same vector as one photo per batch.
    """

    def __init__(
        self, paths: Sequence[str | Path], size: int, scales: Sequence[float] = (1.0,), resize: str = "square"
    ):
        if resize not in RESIZE_MODES:
            raise CompeteError(f"resize must be one of {RESIZE_MODES}, not '{resize}'")
        super().__init__(paths, size=size)
        self.sizes, self.resize = scaled_sizes(size, scales), resize
        self.shapes = [self._plan(path) for path in self.paths]

    def _plan(self, path: Path) -> list[tuple[int, int]] | None:
        """Each view's (height, width); None when the header is unreadable (the photo goes alone)."""
        if self.resize == "square":
            return [(size, size) for size in self.sizes]
        upright = upright_size(path)
        return None if upright is None else [view_shape(*upright, size, self.resize) for size in self.sizes]

    def load(self, index: int) -> list[torch.Tensor]:
        image = read_image(self.paths[index], needed=max(self.sizes))
        shapes = self.shapes[index] or [view_shape(*image.shape[:2], size, self.resize) for size in self.sizes]
        return [resize_to_shape(image, shape) for shape in shapes]

    def blank(self, index: int) -> list[torch.Tensor]:
        return [torch.zeros(3, *shape) for shape in self.shapes[index] or [(s, s) for s in self.sizes]]

    def batches(self, batch_size: int) -> list[list[int]]:
        """Indices in batches of at most `batch_size` whose views share their shapes."""
        groups: dict[tuple, list[int]] = {}
        for index, shapes in enumerate(self.shapes):
            groups.setdefault(tuple(shapes) if shapes else ("alone", index), []).append(index)
        return [
            members[start : start + batch_size]
            for members in groups.values()
            for start in range(0, len(members), batch_size)
        ]


def loader_workers(requested: int = -1) -> int:
    """Loader processes; -1 picks: decoding is cheap next to a CPU forward pass, so only spare cores."""
    if requested >= 0:
        return requested
    # under torchrun the node's cores are shared by its ranks (LOCAL_WORLD_SIZE of them)
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return min(8, cores - 1) if torch.cuda.is_available() else (1 if cores > 2 else 0)


def quiet_worker(_: int) -> None:
    """A loader process decodes with one OpenCV thread: the workers are the parallelism, and OpenCV's
    own pool of one thread per core in each of them would oversubscribe the cores."""
    cv2.setNumThreads(1)
