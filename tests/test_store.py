"""The embedding store: O(N) writes, resume after a kill, several writers, sharded extraction."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from competition.distributed import Distributed
from competition.errors import CompeteError
from competition.retrieval import store as store_module
from competition.retrieval.embed import Extraction, extract_features
from competition.retrieval.store import EmbeddingStore
from competition.settings.model import View


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
    assert np.array_equal(reader.stack(["k0", "k7"]), np.stack([vectors[0], vectors[7]]).astype(np.float16))
    with pytest.raises(CompeteError, match="1 photo.*no vector"):
        reader.stack(["k0", "k9"])  # lost with the kill: an error, never a zero vector that ranks as a photo


def test_only_an_unreadable_photo_stacks_as_a_zero_vector(tmp_path):
    store = EmbeddingStore(tmp_path / "s.store")
    store.put("a", np.ones(4, np.float32))
    assert store.stack(["a", "bad"], unreadable={"bad"}).tolist() == [[1] * 4, [0] * 4]
    with pytest.raises(CompeteError, match="first: gone"):
        store.stack(["a", "gone|123|view"])


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
        vector_bytes = count * 64 * 2  # float16
        per_count[count] = sum(written)
        assert vector_bytes <= sum(written) <= 1.5 * vector_bytes  # vectors once, plus their keys
    assert 3.5 < per_count[1600] / per_count[400] < 4.5


def test_rows_are_kept_as_float16_unless_they_overflow_it(tmp_path):
    store = EmbeddingStore(tmp_path / "s.store")
    small, large = _vectors(1)[0] * 10, np.array([1e6, -2.5, 0.1, 3] * 2, np.float32)
    store.put("small", small)
    store.put("large", large)
    fresh = store.stack(["small", "large"])
    store.flush()
    stored = EmbeddingStore(tmp_path / "s.store").stack(["small", "large"])
    assert fresh.dtype == stored.dtype == np.float32 and np.array_equal(fresh, stored)  # fresh = stored
    assert np.array_equal(stored[1], large)  # past float16's range: kept exactly
    assert np.array_equal(stored[0], small.astype(np.float16)) and not np.array_equal(stored[0], small)
    store.put("alone", small)
    store.flush()
    assert {np.load(f, mmap_mode="r").dtype for f in (tmp_path / "s.store").glob("*.vectors.npy")} == {
        np.dtype(np.float32),  # the chunk that holds the large vector
        np.dtype(np.float16),
    }


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
        mean_colour,
        paths[:5],
        View(32, "square"),
        torch.device("cpu"),
        cache_dir=cache,
        how=Extraction(batch_size=2, progress=False),
    )
    calls.clear()
    again, _ = extract_features(
        mean_colour,
        paths,
        View(32, "square"),
        torch.device("cpu"),
        cache_dir=cache,
        how=Extraction(batch_size=2, progress=False),
    )
    assert sum(calls) == len(paths) - 5 and np.allclose(again[:5], first)


def test_a_large_extraction_says_how_long_it_will_take(tiny_competition, monkeypatch, caplog):
    from competition.retrieval import embed

    clock = itertools.count(0, 10)  # read after the first batch, then after the fourth: 10 s later
    monkeypatch.setattr(embed.time, "monotonic", lambda: next(clock))
    timer = embed.ExtractionTimer(720_000, "gallery", after_batches=3)
    notes = [timer.batch_done(32) for _ in range(5)]  # the first batch pays for start-up: not counted
    assert notes[:3] == ["", "", ""] and notes[4] == ""
    assert notes[3].startswith("gallery: 720,000 photos at 9.6 photos/s (measured on 96) take ~20.8 h")
    assert embed.ExtractionTimer(4_999, "small").photos < embed.ESTIMATE_FROM  # small ones say nothing

    monkeypatch.setattr(embed, "ESTIMATE_FROM", 3)  # and extraction says it, once
    paths = sorted((tiny_competition / "gallery").iterdir())
    extract_features(
        lambda batch: batch.mean(dim=(2, 3)), paths, View(32, "square"), torch.device("cpu"),
        how=Extraction(batch_size=1, progress=False),
    )  # fmt: skip
    assert caplog.text.count("photos/s (measured on 3)") == 1


class _WaitsAtBarrier(Exception):
    pass


class _Rank(Distributed):
    """One torchrun process played in this process: rank 1 stops where it would wait for rank 0."""

    def barrier(self) -> None:
        if self.rank:
            raise _WaitsAtBarrier

    def gather(self, items: list) -> list:
        return list(items)


def test_a_rank_that_opens_the_store_late_still_embeds_its_whole_share(tiny_competition, tmp_path):
    """Rank 1 embeds and flushes its share before rank 0 opens the store (a slow start): rank 0
    must still embed every photo of its own share, so together they cover every photo."""
    paths = sorted((tiny_competition / "gallery").iterdir())
    embedded = []

    def mean_colour(batch):
        embedded.append(len(batch))
        return batch.mean(dim=(2, 3)) + 1.0  # never a zero vector

    cache = tmp_path / "c.store"
    common = dict(cache_dir=cache, view=View(32, "square"), device=torch.device("cpu"))
    how = dict(batch_size=1, progress=False, workers=0)
    with pytest.raises(_WaitsAtBarrier):  # its share embedded and flushed
        extract_features(mean_colour, paths, **common, how=Extraction(**how, shards=_Rank(1, 2)))
    late, failed = extract_features(mean_colour, paths, **common, how=Extraction(**how, shards=_Rank(0, 2)))
    assert sum(embedded) == len(paths) and not failed
    assert np.all(np.abs(late).sum(axis=1) > 0)  # every photo has its own vector, none a zero


def _delayed_rank0_launcher(folder: Path) -> Path:
    """A torchrun entry point whose rank 0 opens the embedding store 3 s late, so that rank 1 has
    flushed chunks by then: the race of sharding 'what is missing' is exercised, not hoped away."""
    script = folder / "late_rank0.py"
    script.write_text(
        "import os, sys, time\n"
        "import competition.retrieval.embed as embed\n"
        "class LateStore(embed.EmbeddingStore):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        if os.environ.get('RANK') == '0':\n"
        "            time.sleep(3)\n"
        "        super().__init__(*args, **kwargs)\n"
        "embed.EmbeddingStore = LateStore\n"
        "from competition.cli import app\n"
        "sys.argv[0] = 'compete'\n"
        "app()\n"
    )
    return script


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("torchrun", path=str(Path(sys.executable).parent)), reason="needs torchrun")
def test_sharded_extraction_under_torchrun_equals_one_process(tiny_competition, tmp_path):
    """Two gloo processes split the photos, write their own chunks, rank 0 ranks: the same file,
    also when rank 0 opens the store after rank 1 has flushed its share."""
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
    from typer.testing import CliRunner

    from competition.cli import app

    single = CliRunner().invoke(app, [*common, "--name", "one", "--runs-dir", str(tmp_path / "runs-one")])
    assert single.exit_code == 0, single.output[-2000:]  # in this process: the reference needs no launch
    sharded = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(_delayed_rank0_launcher(work)),
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
