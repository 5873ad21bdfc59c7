"""The embedding store: O(N) writes, resume after a kill, several writers, sharded extraction."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from competition.retrieval import store as store_module
from competition.retrieval.embed import extract_features
from competition.retrieval.store import EmbeddingStore


def _vectors(count, dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)


def test_a_kill_loses_at_most_the_chunk_in_progress(tmp_path):
    folder = tmp_path / "s.store"
    writer = EmbeddingStore(folder, chunk_rows=4)
    vectors = _vectors(10)
    for i, vector in enumerate(vectors):
        writer.put(f"k{i}", vector)  # chunks of 4 written as they fill; 2 left pending, never flushed
    (folder / "zz-killed.vectors.npy").write_bytes(b"half a chunk")  # killed between vectors and keys
    reader = EmbeddingStore(folder)
    assert len(reader) == 8 and "k8" not in reader
    assert np.array_equal(reader.stack(["k0", "k7", "k9"]), np.stack([vectors[0], vectors[7], np.zeros(8)]))


def test_writes_grow_linearly(tmp_path, monkeypatch):
    """Appending N vectors writes about N vectors' bytes (the old one-file cache rewrote it all)."""
    written = []
    real_save = np.save
    monkeypatch.setattr(
        store_module.np,
        "save",
        lambda handle, array, **kw: written.append(array.nbytes) or real_save(handle, array, **kw),
    )
    per_count = {}
    for count in (400, 1600):
        written.clear()
        store = EmbeddingStore(tmp_path / f"{count}.store", chunk_rows=100)
        for i, vector in enumerate(_vectors(count, dim=64)):
            store.put(f"photo-{i:06d}", vector)
        store.flush()
        vector_bytes = count * 64 * 4
        per_count[count] = sum(written)
        assert vector_bytes <= sum(written) <= 1.5 * vector_bytes  # vectors once, plus their keys
    assert 3.5 < per_count[1600] / per_count[400] < 4.5


def test_two_writers_share_one_store(tmp_path):
    folder = tmp_path / "shared.store"
    first, second = EmbeddingStore(folder), EmbeddingStore(folder)
    first.put("a", np.ones(4, np.float32))
    second.put("b", np.full(4, 2, np.float32))
    first.flush()
    second.flush()
    both = EmbeddingStore(folder)
    assert both.stack(["a", "b"]).tolist() == [[1] * 4, [2] * 4]


def test_extraction_resumes_from_the_store(tiny_competition, tmp_path):
    paths = sorted((tiny_competition / "gallery").iterdir())
    calls = []

    def mean_colour(batch):
        calls.append(len(batch))
        return batch.mean(dim=(2, 3))

    cache = tmp_path / "c.store"
    first, _ = extract_features(
        mean_colour, paths[:5], 32, torch.device("cpu"), cache_dir=cache, batch_size=2, progress=False
    )
    calls.clear()
    again, _ = extract_features(
        mean_colour, paths, 32, torch.device("cpu"), cache_dir=cache, batch_size=2, progress=False
    )
    assert sum(calls) == len(paths) - 5 and np.allclose(again[:5], first)


@pytest.mark.skipif(not shutil.which("torchrun", path=str(Path(sys.executable).parent)), reason="needs torchrun")
def test_sharded_extraction_under_torchrun_equals_one_process(tiny_competition, tmp_path):
    """Two gloo processes split the photos, write their own chunks, rank 0 ranks: the same file."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    common = [
        "submit",
        "--data",
        str(tiny_competition),
        "-k",
        "5",
        "--no-flip",
        "--workers",
        "0",
        "--leaderboard",
        str(tmp_path / "board.md"),
        "--submissions-dir",
        str(tmp_path / "subs"),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    work = tmp_path / "work"  # not the folder holding 'competition/', which would shadow the package
    work.mkdir()
    single = subprocess.run(
        [sys.executable, "-m", "competition.cli", *common, "--name", "one", "--runs-dir", str(tmp_path / "runs-one")],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    sharded = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "competition.cli",
            *common,
            "--name",
            "two",
            "--runs-dir",
            str(tmp_path / "runs-two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=600,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    chunks = list((tmp_path / "runs-two" / "feature-cache").glob("*.store/*.keys.npy"))
    assert len({c.name.split("-")[1] for c in chunks}) == 2  # each process wrote its own chunks
    assert (tmp_path / "subs" / "one.csv").read_text() == (tmp_path / "subs" / "two.csv").read_text()
