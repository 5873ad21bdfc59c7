"""Torch datasets over image files; unreadable files are reported, never fatal mid-batch."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from competition.data.images import UnreadableImage, read_image


def resize_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """Resize the whole photo to size x size (no crop: a landmark at the edge stays in view)."""
    interpolation = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_CUBIC
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float().div_(255.0)


class ImageDataset(Dataset):
    """Yields (image tensor in [0, 1], label, index, ok); a bad file gives a black image and ok=False."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | None = None,
                 transform: Callable[[np.ndarray], torch.Tensor] | None = None, size: int = 224):
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.transform = transform or (lambda image: resize_to_tensor(image, size))
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        return self.transform(read_image(self.paths[index]))

    def __getitem__(self, index: int):
        try:
            tensor, ok = self.load(index), True
        except UnreadableImage:
            tensor, ok = torch.zeros(3, self.size, self.size), False
        return tensor, self.labels[index], index, ok


def default_workers() -> int:
    """Loader processes: decoding is cheap next to a CPU forward pass, so only spare cores."""
    cores = os.cpu_count() or 1
    return min(8, cores - 1) if torch.cuda.is_available() else (1 if cores > 2 else 0)
