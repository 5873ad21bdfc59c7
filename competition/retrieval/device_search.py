"""Exact search by torch on a GPU, where faiss has none: `faiss-cpu`, the default install, cannot
use one. A GPU multiplies GLDv2's 117k queries by its 760k gallery in seconds where 2 CPU cores
take about 15 minutes. It answers `add` and `search` as a faiss index does, so the searches,
batching and checks around a faiss index take it as they are. torch is imported when a search
first asks for a GPU (`compete models` reads faiss's build from the search module without it)."""

from __future__ import annotations

import numpy as np

SCORES_AT_ONCE = 1 << 28  # query x gallery scores a block holds on the device: 1 GB of float32


class DeviceExactIndex:
    """Inner products of every query with every gallery row, the top k kept, on `device`."""

    is_trained = True

    def __init__(self, dim: int, count: int, device):
        import torch

        self.d, self.ntotal, self.device = dim, 0, device
        self.rows = torch.empty((count, dim), dtype=torch.float32, device=device)  # filled by add, in place

    def add(self, rows: np.ndarray) -> None:
        import torch

        rows = torch.from_numpy(np.ascontiguousarray(rows, np.float32))
        self.rows[self.ntotal : self.ntotal + len(rows)] = rows.to(self.device)
        self.ntotal += len(rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices), each (queries, k), best first; -inf and -1 past the gallery's size."""
        import torch

        gallery = self.rows[: self.ntotal]
        kept = min(k, self.ntotal)
        similarities = np.full((len(queries), k), -np.inf, np.float32)
        indices = np.full((len(queries), k), -1, np.int64)
        block = max(1, SCORES_AT_ONCE // max(1, self.ntotal))
        for start in range(0, len(queries), block):
            rows = torch.from_numpy(np.ascontiguousarray(queries[start : start + block], np.float32))
            scores, found = (rows.to(self.device) @ gallery.T).topk(kept, dim=1)
            similarities[start : start + len(rows), :kept] = scores.cpu().numpy()
            indices[start : start + len(rows), :kept] = found.cpu().numpy()
        return similarities, indices


def cuda_device(rows: int, dim: int):
    """The GPU an exact search of `rows` x `dim` may use (a torch.device), None without one or
    when the rows and a block of scores would not fit in four fifths of its free memory (faiss on
    the CPU then: slower, where running out of GPU memory at the end of a submit loses it all)."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return torch.device("cuda") if 4 * (rows * dim + 2 * SCORES_AT_ONCE) < 0.8 * free else None
