"""The rules that matter only on a GPU (issue 47), each tested on the CPU with the CUDA or faiss
GPU query mocked: what precision a card gets, when compiling is skipped, where a faiss index
goes, how a batch that runs out of GPU memory is split, that heads compute in float32 under
autocast, that projections run in blocks, and that DDP sees only weights the embedding uses."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta

import faiss
import numpy as np
import pytest
import torch
from torch import nn

from competition.device import compiled, half_precision_on
from competition.errors import CompeteError
from competition.retrieval import search as search_module
from competition.retrieval.search import GPU_FROM, build_index, gpu_pq_bytes, gpu_refusal

CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    "capability, precision, expected",
    [
        ((6, 0), "auto", torch.float16),  # P100
        ((7, 0), "auto", torch.float16),  # V100
        ((7, 5), "auto", torch.float16),  # T4: is_bf16_supported() says True (emulated), cuDNN says no
        ((8, 0), "auto", torch.bfloat16),  # A100
        ((9, 0), "auto", torch.bfloat16),  # H100
        ((7, 5), "bf16", torch.bfloat16),  # asked for: given
        ((9, 0), "fp32", None),
    ],
)
def test_auto_precision_follows_the_compute_capability_not_emulation(monkeypatch, capability, precision, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert half_precision_on(CUDA, precision) == expected


def test_compile_is_skipped_below_triton_s_capability_and_falls_back_to_eager(monkeypatch, caplog):
    module = nn.Linear(2, 2)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **options: calls.append(options) or "compiled")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    with caplog.at_level(logging.WARNING):
        assert compiled(module, CUDA, True) is module
    assert "Triton needs compute capability 7.0" in caplog.text and not calls
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    from torch import _dynamo

    monkeypatch.setattr(_dynamo.config, "suppress_errors", False)
    assert compiled(module, CUDA, True) == "compiled" and _dynamo.config.suppress_errors
    assert compiled(module, torch.device("cpu"), True) is module and len(calls) == 1


def _flat(count: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, dim)).astype(np.float32)


@pytest.mark.parametrize(
    "factory, count, k, fragment",
    [
        ("HNSW32,Flat", GPU_FROM, 10, "HNSW has no GPU version"),
        ("Flat", 500, 10, "500 photos search faster on the CPU"),
        ("Flat", GPU_FROM, 3000, "k = 3000 is past faiss GPU's limit of 2048"),
        ("IVF4,Flat", GPU_FROM, 10, ""),
        ("Flat", GPU_FROM, 2048, ""),
    ],
)
def test_an_index_goes_to_the_gpu_only_where_faiss_gpu_takes_it_and_it_pays(factory, count, k, fragment):
    index = faiss.index_factory(8, factory, faiss.METRIC_INNER_PRODUCT)
    assert (
        gpu_refusal(index, count, k, None).startswith(fragment)
        if fragment
        else gpu_refusal(index, count, k, None) == ""
    )
    if "search faster" in fragment:
        assert gpu_refusal(index, count, k, True) == ""  # asked for: a small gallery goes too


def test_nprobe_and_pq_codes_past_faiss_gpu_limits_keep_the_index_on_the_cpu():
    ivf = faiss.index_factory(16, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(ivf).nprobe = 4096
    assert "nprobe 4096" in gpu_refusal(ivf, GPU_FROM, 10, None)
    pq = faiss.index_factory(1280, "IVF4,PQ160", faiss.METRIC_INNER_PRODUCT)
    assert "160-byte PQ codes" in gpu_refusal(pq, GPU_FROM, 10, None)
    assert gpu_refusal(faiss.index_factory(1280, "IVF4,PQ64", faiss.METRIC_INNER_PRODUCT), GPU_FROM, 10, None) == ""
    assert [gpu_pq_bytes(d) for d in (512, 768, 1280, 2048, 4)] == [64, 96, 64, 64, None]


def test_ivfpq_codes_on_a_gpu_are_a_size_it_takes(monkeypatch):
    monkeypatch.setattr(search_module, "_gpu_count", lambda: 1)
    assert search_module._pq_bytes(1280) == 64
    monkeypatch.setattr(search_module, "_gpu_count", lambda: 0)
    assert search_module._pq_bytes(1280) == 160  # the CPU keeps dim/8, as before


def test_build_index_clones_to_the_gpus_once_and_keeps_the_cpu_index_when_a_clone_fails(monkeypatch, caplog):
    monkeypatch.setattr(search_module, "_gpu_count", lambda: 1)
    cloned = []
    monkeypatch.setattr(search_module, "_to_gpus", lambda index: cloned.append(index) or index)
    gallery = _flat(GPU_FROM)
    build_index(gallery, "exact", k=100)
    assert len(cloned) == 1
    with caplog.at_level(logging.WARNING):
        index = build_index(gallery, "exact", k=3000)  # past faiss GPU's k: searched on the CPU, said once
    assert len(cloned) == 1 and "k = 3000" in caplog.text and index.ntotal == GPU_FROM
    build_index(_flat(300), "exact", k=10)  # a few hundred photos: no GPU scratch for them
    assert len(cloned) == 1

    def no_gpu_version(index):
        raise RuntimeError("Error in virtual faiss::Index* faiss::gpu::ToGpuCloner: not implemented for this type")

    monkeypatch.setattr(search_module, "_to_gpus", no_gpu_version)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        index = build_index(gallery, "exact", k=10, factory="IDMap2,Flat")
    assert "the GPU cannot hold it" in caplog.text or "exact search instead" in caplog.text
    assert index.ntotal == GPU_FROM
    build_index(gallery, "exact", k=10, use_gpu=False)  # told not to: never asks


def test_with_faiss_cpu_on_a_cuda_machine_exact_search_runs_on_torch_and_finds_what_faiss_finds(monkeypatch):
    """pip's faiss-cpu cannot use a GPU: exact search of a large gallery goes to torch there (the
    device mocked by the CPU), ranking as faiss does; IVF, small galleries and use_gpu=False stay."""
    from competition.retrieval import device_search
    from competition.retrieval.search import Searcher, is_exact, probes, search, search_index
    from competition.retrieval.vectors import l2_normalize

    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(3000, 24)).astype(np.float32), rng.normal(size=(70, 24)).astype(np.float32)
    expected = search(queries, gallery, 10)  # faiss, CPU
    monkeypatch.setattr(search_module, "cuda_device", lambda rows, dim: torch.device("cpu"))
    monkeypatch.setattr(device_search, "SCORES_AT_ONCE", 3000 * 16)  # blocks of 16 queries
    assert isinstance(build_index(gallery, "exact", k=10), faiss.Index)  # 3,000 photos: not worth a GPU
    assert isinstance(build_index(gallery, "exact", k=10, use_gpu=False), faiss.Index)
    built = build_index(gallery, "exact", k=10, use_gpu=True)  # asked for
    assert isinstance(built, device_search.DeviceExactIndex) and is_exact(built) and probes(built) is None
    similarities, indices = search_index(built, l2_normalize(queries), 10)
    assert np.array_equal(indices, expected[1]) and np.allclose(similarities, expected[0], atol=1e-5)
    _, beyond = search_index(built, l2_normalize(queries[:3]), 3005)  # as faiss: -1 past the gallery
    assert (beyond[:, :3000] >= 0).all() and (beyond[:, 3000:] == -1).all()
    monkeypatch.setattr(search_module, "GPU_FROM", 1000)
    searcher = Searcher("exact", 10)
    assert np.array_equal(search(queries, gallery, 10, index=searcher)[1], expected[1])
    assert isinstance(searcher.index, device_search.DeviceExactIndex) and searcher.describe() == "exact"
    assert isinstance(build_index(gallery, "ivf", k=10), faiss.Index)  # approximate kinds stay faiss's


def test_torch_searches_on_the_gpu_only_what_fits_in_its_free_memory(monkeypatch):
    from competition.retrieval.device_search import cuda_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *device: (16 << 30, 16 << 30))
    assert cuda_device(760_000, 1280) == CUDA  # GLDv2's gallery: 3.9 GB of a free 16
    assert cuda_device(3_000_000, 1280) is None  # 15.4 GB: faiss on the CPU instead of running out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_device(10, 10) is None


def test_heads_and_losses_compute_in_float32_under_the_caller_s_autocast():
    from competition.train.full_layer import EmbeddingLoss

    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 4))

        def forward(self, embedding, labels):
            cosine = nn.functional.linear(nn.functional.normalize(embedding), nn.functional.normalize(self.weight))
            seen.append((embedding.dtype, cosine.dtype))
            return nn.functional.cross_entropy(cosine * 30, labels)

    model = EmbeddingLoss(nn.Linear(5, 4), Recorder())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert seen == [(torch.float32, torch.float32)] and loss.dtype == torch.float32


def test_projection_in_row_blocks_equals_the_whole_matrix():
    from competition.models.projection import project_rows

    torch.manual_seed(0)
    projection = nn.Linear(12, 5)
    vectors = np.random.default_rng(0).normal(size=(1003, 12)).astype(np.float16)
    with torch.no_grad():
        whole = projection(torch.from_numpy(vectors.astype(np.float32))).numpy()
    blocks = project_rows(projection, vectors, torch.device("cpu"), block=100)
    assert blocks.dtype == np.float32 and np.array_equal(blocks, whole)
    assert project_rows(projection, vectors[:0], torch.device("cpu")).shape == (0, 5)


def test_a_batch_out_of_gpu_memory_is_split_until_it_fits_said_once(monkeypatch, caplog):
    from competition.retrieval import embed as embed_module
    from competition.settings.model import View

    monkeypatch.setattr(embed_module, "_halved", [])
    weights = torch.randn(3 * 4 * 4, 6)
    sizes = []

    def small_gpu(images):
        sizes.append(len(images))
        if len(images) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return images.flatten(1) @ weights

    view = View(size=4, resize="square", flip=True)
    views = [torch.randn(8, 3, 4, 4)]
    with caplog.at_level(logging.WARNING):
        split = embed_module.embed_fitting(small_gpu, views, torch.device("cpu"), view)
        embed_module.embed_fitting(small_gpu, views, torch.device("cpu"), view)
    whole = embed_module._embed_views(lambda images: images.flatten(1) @ weights, views, torch.device("cpu"), view)
    np.testing.assert_allclose(split, whole, rtol=1e-6, atol=1e-6)
    assert caplog.text.count("out of GPU memory at 8 photos") == 1 and max(sizes) == 8 and 2 in sizes

    def no_memory(images):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(CompeteError, match="out of GPU memory embedding one photo"):
        embed_module.embed_fitting(no_memory, [torch.randn(1, 3, 4, 4)], torch.device("cpu"), view)


@pytest.mark.parametrize("backbone, unused", [("convnext_atto", "head.norm"), ("mobilenetv3_small_050", "conv_head")])
def test_weights_the_embedding_never_uses_are_frozen_before_ddp(backbone, unused):
    from competition.models.embedder import build_embedder
    from competition.settings.model import ModelSettings
    from competition.train.freezing import freeze_unused, user_facing_name

    embedder, _ = build_embedder(ModelSettings(backbone=backbone, pretrained=False, embedding_dim=8))
    running = {k: v.clone() for k, v in embedder.state_dict().items() if "running" in k}
    frozen = [user_facing_name(name) for name in freeze_unused(embedder, 64)]
    assert frozen and all(name.startswith(f"backbone.{unused}") or unused in name for name in frozen), frozen
    assert all(p.grad is None for p in embedder.parameters())  # the probe leaves no gradient behind
    assert all(torch.equal(v, embedder.state_dict()[k]) for k, v in running.items())  # nor BatchNorm statistics
    embedder(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in embedder.parameters() if p.requires_grad)


@pytest.mark.slow
def test_two_process_gloo_run_of_a_convnext_trains(tiny_competition, tmp_path):
    """The reproduction of issue 47, row 1: DDP stopped at the second epoch's first step on ConvNeXt's
    unused head.norm ("Expected to have finished reduction in the prior iteration")."""
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "competition.cli", "--quiet", "train", "--name", "convnext", "--data", tiny_competition,
        "--runs-dir", tmp_path, "--regime", "full", "--backbone", "convnext_atto", "--no-pretrained",
        "--epochs", 2, "--image-size", 32, "--batch-size", 2, "--no-augmented", "--embedding-dim", 8,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in launch], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "convnext" / "best.pt").is_file()


def test_the_process_group_waits_as_long_as_rank_0_s_validation_may_take(monkeypatch):
    from competition import distributed

    assert distributed.dist_timeout() == timedelta(minutes=distributed.DIST_TIMEOUT_MINUTES) > timedelta(minutes=10)
    monkeypatch.setenv("COMPETE_DIST_TIMEOUT", "30")
    assert distributed.dist_timeout() == timedelta(minutes=30)
    given = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: given.update(t=timeout))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.atexit, "register", lambda f: None)
    assert distributed.init_distributed().rank == 1 and given["t"] == timedelta(minutes=30)
    monkeypatch.setenv("COMPETE_DIST_TIMEOUT", "soon")
    with pytest.raises(CompeteError, match="COMPETE_DIST_TIMEOUT must be minutes"):
        distributed.dist_timeout()


def test_a_decision_is_rank_0_s_on_every_rank(monkeypatch):
    from competition import distributed

    one = distributed.Distributed()
    assert one.share({"threshold": 0.7}) == {"threshold": 0.7}

    def broadcast(box, src):
        box[0] = "rank 0's"

    monkeypatch.setattr(distributed.dist, "broadcast_object_list", broadcast)
    assert distributed.Distributed(rank=1, world=2).share("mine") == "rank 0's"


def test_recognition_searches_on_rank_0_only():
    from competition.submit.recognition import recognise

    embedded = []
    model = type("Model", (), {"classifier": None})()
    found = recognise([model], [1.0], [np.ones((2, 4), np.float32)], lambda m: embedded.append(m) or _flat(5, 4),
                      np.array(list("aabbc")), main=False)  # fmt: skip
    assert found is None and embedded == [model]  # its share embedded, no search
    landmarks, confidence, _ = recognise(
        [model], [1.0], [_flat(2, 4)], lambda m: _flat(5, 4), np.array(list("aabbc")), main=True
    )
    assert len(landmarks) == 2


def test_throughput_waits_for_the_device(monkeypatch):
    from competition.settings.model import ModelSettings
    from competition.sweep import estimate as runner

    waited = []
    monkeypatch.setattr(runner, "finished", lambda device: waited.append(device))
    speed = runner.measure_throughput(
        ModelSettings(backbone="efficientnet_lite0", image_size=32), torch.device("cpu"), 2
    )
    assert speed > 0 and len(waited) == 2
