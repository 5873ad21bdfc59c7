"""Training: regimes, losses, partial unfreezing, caching, exact resume, multi-process."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import state_of, tiny_config

from competition.errors import CompeteError
from competition.models.checkpoint import load_checkpoint
from competition.models.embedder import Embedder, build_embedder
from competition.runs import LAST
from competition.settings.train import TrainConfig
from competition.train import full_layer, loop
from competition.train.loop import train
from competition.train.losses import make_loss
from competition.train.sampling import epoch_order


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_epoch_order_groups_classes_and_shards_without_overlap():
    labels = np.repeat(np.arange(5), [3, 4, 5, 2, 6])
    order = epoch_order(labels, 4, seed=1, epoch=0)
    runs = labels[order].reshape(-1, 4)
    assert (runs == runs[:, :1]).all()  # every run of 4 is one class: positives for triplet mining
    assert set(order) == set(range(len(labels)))  # every sample seen, short classes topped up
    assert sorted(epoch_order(labels, 1, 1, 0)) == list(range(len(labels)))  # per_class=1: a permutation
    assert not np.array_equal(epoch_order(labels, 1, 1, 0), epoch_order(labels, 1, 1, 1))  # new order per epoch
    shards = [epoch_order(labels, 4, 1, 0, rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])  # DDP needs the same number of batches on every rank
    assert set(shards[0].reshape(-1, 4)[:, 0]).isdisjoint(shards[1].reshape(-1, 4)[:, 0])


@pytest.mark.parametrize("name, mining", [("triplet", "hard"), ("triplet", "semihard"), ("contrastive", "")])
def test_pair_losses_learn_to_separate_classes(name, mining):
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    features = torch.randn(16, 8) * 0.3 + torch.randn(4, 8).repeat_interleave(4, 0) * 0.3
    projection = torch.nn.Linear(8, 8)
    loss_fn = make_loss(name, 8, 4, triplet_margin=0.2, triplet_mining=mining or "semihard", contrastive_margin=0.7)
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.5)

    def gap() -> float:  # mean same-class cosine minus mean other-class cosine
        with torch.no_grad():
            e = torch.nn.functional.normalize(projection(features))
        same = labels[:, None] == labels[None, :]
        return ((e @ e.T)[same & ~torch.eye(16, dtype=bool)].mean() - (e @ e.T)[~same].mean()).item()

    before, first = gap(), loss_fn(projection(features), labels).item()
    for _ in range(100):
        loss = loss_fn(projection(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gap() > before + 0.1 and loss.item() < first / 2


@pytest.mark.slow
@pytest.mark.parametrize("regime, head", [("full", "arcface"), ("full", "triplet")])
def test_resume_after_interrupt_equals_uninterrupted_run(tiny_competition, tmp_path, monkeypatch, regime, head):
    straight = tiny_config(tiny_competition, tmp_path, "straight", regime=regime, head=head, epochs=3)
    train(straight, progress=False)

    original = full_layer.FullLayerTrainer._end_epoch

    def interrupt_after_first_epoch(self, *args, **kwargs):
        stop = original(self, *args, **kwargs)
        if self.state.epoch == 1:
            raise KeyboardInterrupt
        return stop

    interrupted = tiny_config(tiny_competition, tmp_path, "interrupted", regime=regime, head=head, epochs=3)
    monkeypatch.setattr(full_layer.FullLayerTrainer, "_end_epoch", interrupt_after_first_epoch)
    with pytest.raises(CompeteError, match="--resume"):
        train(interrupted, progress=False)
    assert load_checkpoint(tmp_path / "interrupted" / LAST)["state"]["epoch"] == 1
    monkeypatch.setattr(full_layer.FullLayerTrainer, "_end_epoch", original)
    train(
        tiny_config(tiny_competition, tmp_path, "interrupted", regime=regime, head=head, epochs=3),
        resume=True,
        progress=False,
    )

    for part in ("embedder", "criterion", "optimizer"):
        a, b = state_of(tmp_path / "straight", part), state_of(tmp_path / "interrupted", part)
        if part == "optimizer":
            a, b = (
                {str(k): v["exp_avg"] for k, v in a["state"].items()},
                {str(k): v["exp_avg"] for k, v in b["state"].items()},
            )
        assert_same_tensors(a, b)
    metrics = [
        pd.read_csv(tmp_path / run / "metrics.csv").drop(columns="seconds") for run in ("straight", "interrupted")
    ]
    pd.testing.assert_frame_equal(*metrics)


def test_resume_refuses_changed_settings(tiny_competition, tmp_path):
    train(tiny_config(tiny_competition, tmp_path, "run", regime="full", epochs=1), progress=False)
    with pytest.raises(CompeteError, match="embedding_dim"):
        train(
            tiny_config(tiny_competition, tmp_path, "run", regime="full", epochs=2, embedding_dim=8),
            resume=True,
            progress=False,
        )


def test_last_regime_reuses_cached_features(tiny_competition, tmp_path, monkeypatch):
    train(tiny_config(tiny_competition, tmp_path, "first", epochs=1), progress=False)
    calls = []
    real_pooled = Embedder.pooled
    monkeypatch.setattr(Embedder, "pooled", lambda self, images: calls.append(len(images)) or real_pooled(self, images))
    train(tiny_config(tiny_competition, tmp_path, "second", epochs=1, head="cosface"), progress=False)
    assert calls == []  # baseline, validation and training features all came from the cache
    train(tiny_config(tiny_competition, tmp_path, "third", epochs=1, image_size=40), progress=False)
    assert sum(calls) > 0  # another image size is another cache entry


def test_each_folds_whitening_is_fitted_once_for_validation_the_gate_and_post_processing(
    tiny_competition, tmp_path, monkeypatch
):
    """At 1.58M photos a fit is a minute: the mixed folds' heads that validation scores are the ones
    the label fusion's gate and the post-processing choice use, not fitted again."""
    from competition.train import whitening

    fitted = []  # each fit's training rows

    def fit(rows, labels, power=0.5):
        fitted.append(rows.index.tobytes())
        return real_fit(rows, labels, power)

    real_fit = whitening.fit_learned_whitening
    monkeypatch.setattr(whitening, "fit_learned_whitening", fit)
    summary = train(tiny_config(tiny_competition, tmp_path, "once", head="whitening"), progress=False)
    assert summary["label_fusion"]["gated"] and summary["postprocess"]  # the gate and the choice ran
    assert len(fitted) > len(summary["fold_shrinkage"]) + 1 and len(set(fitted)) == len(fitted)


def test_full_regime_learns_gem_p_and_unfreeze_from_keeps_early_layers(tiny_competition, tmp_path):
    config = tiny_config(
        tiny_competition, tmp_path, "partial", regime="full", backbone="resnet18", epochs=1, unfreeze_from="layer4"
    )
    train(config, progress=False)
    trained = state_of(tmp_path / "partial")
    loop.seed_everything(config.seed)  # as the trainer does: the same random initial weights
    initial = build_embedder(config.model, config.projection)[0].state_dict()
    early = [k for k in trained if ".layer4." not in k and k.startswith("backbone.") and "num_batches" not in k]
    late = [k for k in trained if ".layer4." in k and k.endswith("conv1.weight")]
    assert early and late
    assert all(torch.equal(trained[k], initial[k]) for k in early)  # frozen below layer4, BN stats included
    assert all(not torch.equal(trained[k], initial[k]) for k in late)
    assert trained["pooling.p"].item() != pytest.approx(3.0, abs=1e-6)  # GeM's p is learned


def test_unknown_unfreeze_layer_lists_the_real_ones(tiny_competition, tmp_path):
    config = tiny_config(tiny_competition, tmp_path, "bad", regime="full", backbone="resnet18", unfreeze_from="layer9")
    with pytest.raises(CompeteError, match="layer4"):
        train(config, progress=False)
    with pytest.raises(CompeteError, match="regime full"):
        TrainConfig.from_dict({"unfreeze_from": "layer4", "regime": "last"})


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "subcenter-arcface"])
def test_two_process_gloo_run_matches_one_process_with_double_batch(tiny_competition, tmp_path, head):
    """torchrun with 2 CPU processes: DDP averages gradients (the head's class centres' too), so the result
    equals one process with twice the batch. Sub-center ArcFace is the head of Google-Landmarks-size runs."""
    common = [
        "--head",
        head,
        "--data",
        tiny_competition,
        "--runs-dir",
        tmp_path,
        "--regime",
        "full",
        "--epochs",
        2,
        "--image-size",
        32,
        "--embedding-dim",
        16,
        "--no-augmented",
        "--no-pretrained",
        "--lr",
        0.01,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "competition.cli",
        "--quiet",
        "train",
        "--name",
        "ddp",
        "--batch-size",
        2,
    ]
    done = subprocess.run([str(a) for a in launch + common], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from typer.testing import CliRunner

    from competition.cli import app

    single = ["--quiet", "train", "--name", "single", "--batch-size", "4"]  # the reference: in this process
    done = CliRunner().invoke(app, single + [str(a) for a in common])
    assert done.exit_code == 0, done.output[-3000:]
    assert done.output.count("best epoch") == 1
    # Gradients agree to float rounding: compare Adam's running mean of them. The weights
    # themselves may differ by more, as Adam divides near-zero gradients by near-zero scales.
    ddp, one = state_of(tmp_path / "ddp", "optimizer")["state"], state_of(tmp_path / "single", "optimizer")["state"]
    assert ddp.keys() == one.keys() and len(ddp) > 100
    for key in ddp:
        torch.testing.assert_close(ddp[key]["exp_avg"], one[key]["exp_avg"], rtol=1e-3, atol=1e-5)
    for part in ("embedder", "criterion"):
        single = state_of(tmp_path / "single", part)  # once: a checkpoint load per weight took half the test
        for name, weights in state_of(tmp_path / "ddp", part).items():
            torch.testing.assert_close(weights, single[name], rtol=0, atol=5e-3)
    assert load_checkpoint(tmp_path / "ddp" / LAST)["state"]["epoch"] == 2


def test_last_layer_runs_share_the_backbones_pooled_features_at_submit(tiny_competition, tmp_path, monkeypatch):
    """A frozen backbone embeds the query/gallery photos once; each run adds only its projection."""
    from competition.settings.submit import SubmitConfig
    from competition.submit.run import submit

    for name, head in (("whiten", "auto"), ("cos", "cosface")):
        train(tiny_config(tiny_competition, tmp_path, name, head=head, pretrained=True, epochs=1), progress=False)
    common = dict(
        data=str(tiny_competition),
        runs_dir=str(tmp_path),
        submissions_dir=str(tmp_path / "subs"),
        leaderboard=str(tmp_path / "board.md"),
        image_size=32,
        if_worse="keep",
    )
    first = submit(SubmitConfig(model=["efficientnet_lite0"], name="plain", **common), progress=False)
    calls = []
    real_pooled = Embedder.pooled
    monkeypatch.setattr(Embedder, "pooled", lambda self, images: calls.append(len(images)) or real_pooled(self, images))
    both = submit(
        SubmitConfig(model=[str(tmp_path / "whiten"), str(tmp_path / "cos")], name="runs", **common), progress=False
    )
    assert calls == []  # both runs reused the off-the-shelf pooled features
    assert first.scores is not None and both.scores is not None and both.scores != first.scores


def test_vlad_pooling_starts_from_kmeans_learns_and_submits_in_the_full_regime(tiny_competition, tmp_path, monkeypatch):
    from competition.models.pooling import NetVLAD
    from competition.settings.submit import SubmitConfig
    from competition.submit.run import submit

    starts = []
    real_fit = NetVLAD.fit

    def fit(self, descriptors, seed=0):
        real_fit(self, descriptors, seed)
        starts.append((len(descriptors), self.centres.detach().clone()))

    monkeypatch.setattr(NetVLAD, "fit", fit)
    settings = dict(regime="full", pooling="vlad", image_size=64, pretrained=True)
    train(tiny_config(tiny_competition, tmp_path, "vlad", **settings), progress=False)
    assert len(starts) == 1 and starts[0][0] >= 16  # every position of the fold's training photos' maps
    trained = state_of(tmp_path / "vlad")
    assert trained["pooling.fitted"].item() and trained["pooling.centres"].shape == (8, 1280)
    assert trained["projection.weight"].shape == (16, 8 * 1280)
    assert not torch.equal(trained["pooling.centres"], starts[0][1])  # learned from the k-means start
    assert not list(tmp_path.glob("feature-cache/*vlad*"))  # the baseline depends on the run's photos: not cached
    common = dict(data=str(tiny_competition), runs_dir=str(tmp_path), submissions_dir=str(tmp_path / "subs"))
    common |= dict(leaderboard=str(tmp_path / "board.md"), if_worse="keep")
    result = submit(SubmitConfig(model=[str(tmp_path / "vlad")], name="vlad", **common), progress=False)
    assert result.scores["top1"] > 0
    # too few photos to judge it: the fallback is the backbone with GeM, VLAD's centres being the run's
    fallback = submit(SubmitConfig(**common | {"model": [str(tmp_path / "vlad")], "if_worse": "fallback"}))
    assert list(fallback.fell_back) == ["vlad"] and fallback.scores["top1"] > 0  # ranked by GeM, no error
    with pytest.raises(CompeteError, match="full-regime run"):
        submit(SubmitConfig(model=["efficientnet_lite0"], pooling="vlad", image_size=64, **common), progress=False)
    with pytest.raises(CompeteError, match="--pooling vlad .* --regime full"):
        tiny_config(tiny_competition, tmp_path, "last", pooling="vlad")
