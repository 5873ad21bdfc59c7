import pickle
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from competition.data.dataset import resize_to_tensor
from competition.data.images import read_image
from competition.errors import CompeteError
from competition.models.checkpoint import load_checkpoint
from competition.models.embedder import Embedder, build_embedder
from competition.models.pooling import GeM, gem, mac, spoc
from competition.models.projection import make_projection
from competition.models.registry import REGISTRY, build_classifier, get_spec
from competition.models.view import ASPECT_SIDE_SCALE, model_view
from competition.models.weights import WeightsUnavailable, load_pretrained
from competition.settings.model import ModelSettings


def test_offline_weights_classify_a_known_photo():
    """ImageNet class 652 is 'military uniform': Grace Hopper's portrait, shipped by matplotlib."""
    spec = get_spec("efficientnet_lite0")
    model = build_classifier(spec)
    assert load_pretrained(spec, model).startswith("package:")
    model.eval()
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    x = resize_to_tensor(read_image(photo), 224)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        assert model(x).argmax().item() == 652


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_listed_backbone_builds_and_embeds_at_its_stated_size(name):
    embedder, origin = build_embedder(ModelSettings(backbone=name, pretrained=False, embedding_dim=0))
    embedder.eval()
    with torch.no_grad():
        out = embedder(torch.rand(2, 3, 32, 32))
    assert origin == "random" and out.shape == (2, REGISTRY[name].feature_dim)
    projected = Embedder(
        embedder.backbone, embedder.pooling, make_projection("linear", embedder.feature_dim, 24)
    ).eval()
    assert projected(torch.rand(1, 3, 32, 32)).shape == (1, 24)
    projected, _ = build_embedder(ModelSettings(backbone=name, pretrained=False, embedding_dim=24), "linear")
    assert projected.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 24)


def test_missing_torchvision_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec("resnet18")
    with pytest.raises(WeightsUnavailable) as error:
        load_pretrained(spec, build_classifier(spec))
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message and "--weights" in message


def test_weights_file_is_loaded_and_checked(tmp_path):
    spec = get_spec("resnet18")
    source = build_classifier(spec)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    target = build_classifier(spec)
    assert load_pretrained(spec, target, tmp_path / "r18.pth").startswith("file:")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    with pytest.raises(WeightsUnavailable, match="do not fit"):
        load_pretrained(get_spec("googlenet"), build_classifier(get_spec("googlenet")), tmp_path / "r18.pth")


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(CompeteError, match="resnet50"):
        get_spec("resnet9000")


def test_pooling_functions_agree_with_their_definitions():
    x = torch.rand(2, 5, 4, 4) + 0.1
    assert torch.allclose(gem(x, p=1.0), spoc(x), atol=1e-5)
    assert torch.allclose(gem(x, p=80.0), mac(x), rtol=0.05)
    pool = GeM(p=3.0)
    pool(x).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs().item() > 0


def test_netvlad_sums_soft_assigned_residuals_per_centre_from_kmeans_centres():
    from competition.models.pooling import NetVLAD

    rng = np.random.default_rng(0)
    modes = rng.standard_normal((3, 6)).astype(np.float32)  # descriptors around 3 directions
    descriptors = modes[rng.integers(0, 3, 600)] + 0.05 * rng.standard_normal((600, 6)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    pool = NetVLAD(channels=6, clusters=3)
    x = torch.rand(2, 6, 4, 5)
    with pytest.raises(CompeteError, match="full-regime run"):
        pool(x)  # its centres belong to a run: unfitted, it embeds nothing
    pool.fit(descriptors)
    centres = pool.centres.detach().numpy()
    unit_modes = modes / np.linalg.norm(modes, axis=1, keepdims=True)
    assert np.sort(np.abs(centres @ unit_modes.T).max(axis=0)).min() > 0.98  # one centre a mode
    out = pool(x)
    # the definition, one position and one centre at a time
    local = torch.nn.functional.normalize(x, dim=1).flatten(2)  # (2, 6, 20)
    logits = torch.einsum("kc,bcn->bkn", pool.assign.weight[:, :, 0, 0], local)
    weights = logits.softmax(dim=1)
    expected = torch.zeros(2, 3, 6)
    for k in range(3):
        for n in range(20):
            expected[:, k] += weights[:, k, n, None] * (local[:, :, n] - pool.centres[k])
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(expected, dim=2).flatten(1), dim=1)
    assert out.shape == (2, 18) and torch.allclose(out, expected, atol=1e-5)
    sharpest = torch.sort(torch.from_numpy(descriptors) @ pool.assign.weight[:, :, 0, 0].T, dim=1).values
    assert (sharpest[:, -1] - sharpest[:, -2]).mean().item() == pytest.approx(np.log(100), rel=1e-4)
    out.sum().backward()
    assert pool.centres.grad.abs().sum() > 0 and pool.assign.weight.grad.abs().sum() > 0  # it learns


@pytest.mark.parametrize("height, width", [(7, 7), (12, 9), (9, 16), (2, 3)])
def test_rmac_sums_each_regions_normalised_max_over_overlapping_squares(height, width):
    from competition.models.pooling import rmac, rmac_regions

    x = torch.rand(2, 6, height, width)
    expected = mac(x) / mac(x).norm(dim=1, keepdim=True)
    for level, (side, (tops, lefts)) in enumerate(rmac_regions(height, width), start=1):
        assert side == 2 * min(height, width) // (level + 1)
        assert len(tops) >= level**2 and max(tops) + side <= height and max(lefts) + side <= width
        for top, left in zip(tops, lefts):  # the definition, one region at a time
            region = x[:, :, top : top + side, left : left + side].amax(dim=(-2, -1))
            expected = expected + region / region.norm(dim=1, keepdim=True)
    assert torch.allclose(rmac(x), expected, atol=1e-5)
    if height == width == 7:  # cnnimageretrieval's 7 x 7 map: 1 + 4 + 9 regions
        assert [len(tops) for _, (tops, _) in rmac_regions(7, 7)] == [1, 4, 9]
    if width > height:  # a longer side gets more regions, overlapping by about 40%
        first = rmac_regions(height, width)[0]
        assert len(first[1][1]) > 1 and min(np.diff(sorted(set(first[1][1])))) < first[0]


def test_margin_heads_penalise_the_target_class():
    from competition.train.losses import make_head

    torch.manual_seed(0)
    head = make_head("arcface", 8, 3)
    embedding, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with_margin, plain = head(embedding, labels), head(embedding)
    target = torch.nn.functional.one_hot(labels, 3).bool()
    assert (with_margin[target] < plain[target]).all() and torch.equal(with_margin[~target], plain[~target])


def test_subcenter_arcface_learns_a_class_with_two_modes():
    from competition.train.losses import make_loss

    torch.manual_seed(0)
    # class 0 has two opposite modes (inside / outside of a building), class 1 sits between them
    embedding = torch.cat([torch.randn(8, 4) * 0.1 + torch.tensor([3.0, 0, 0, 0]) * sign for sign in (1, -1)])
    embedding = torch.cat([embedding, torch.randn(8, 4) * 0.1 + torch.tensor([0, 3.0, 0, 0])])
    labels = torch.tensor([0] * 16 + [1] * 8)
    loss = make_loss("subcenter-arcface", 4, 2)
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5)
    first = loss(embedding, labels)
    for _ in range(50):
        optimizer.zero_grad()
        value = loss(embedding, labels)
        value.backward()
        optimizer.step()
    assert value.item() < 0.5 * first.item()
    centres = loss.loss.W.detach().T.reshape(2, 3, 4)  # (classes, sub-centres, dim)
    towards = torch.nn.functional.normalize(centres[0], dim=-1) @ torch.tensor([1.0, 0, 0, 0])
    assert towards.max() > 0.5 and towards.min() < -0.5  # one sub-centre per mode


def test_subcenter_arcface_smooths_labels_as_every_classifier_head_does():
    from competition.train.config import TrainConfig
    from competition.train.losses import loss_for

    torch.manual_seed(0)
    embedding, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    config = TrainConfig(head="subcenter-arcface", label_smoothing=0.2)
    loss = loss_for(config, 4, 3)
    logits = []
    loss.loss.cross_entropy.register_forward_hook(lambda module, inputs, output: logits.append(inputs[0]))
    smoothed = loss(embedding, labels)
    expected = torch.nn.functional.cross_entropy(logits[0], labels, label_smoothing=0.2)
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert smoothed.item() != pytest.approx(torch.nn.functional.cross_entropy(logits[0], labels).item(), rel=1e-3)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/compete-pwned"),))


def test_checkpoint_loading_never_runs_code(tmp_path):
    Path("/tmp/compete-pwned").unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format_version": 1, "x": _Exploit()}))
    with pytest.raises(CompeteError, match="unreadable checkpoint"):
        load_checkpoint(path)
    assert not Path("/tmp/compete-pwned").exists()


@pytest.mark.parametrize(
    "name, pooling, tokens",
    [
        ("test_vit", "avg", 100),
        ("test_vit", "gem", 100),
        ("test_vit", "cls", 1),
        ("swin_tiny_patch4_window7_224", "gem", 49),
        ("test_convnext", "max", 81),  # a CNN: its aspect view, 160 px x 384/224 -> 288 px, 9 x 9
        ("test_convnext", "rmac", 81),
    ],
)
def test_transformer_and_channels_last_backbones_embed_through_every_pooling(name, pooling, tokens):
    """Token sequences become a patch grid (or the class token), NHWC maps are permuted: the
    embedding is the pooled channel vector, at the model's own input size and normalisation."""
    from competition.models.registry import tokens_to_map

    torch.manual_seed(0)
    config = ModelSettings(backbone=name, pooling=pooling, pretrained=False)
    embedder, _ = build_embedder(config)
    embedder.eval()
    view = model_view(config)
    size = view.size
    timm_model = embedder.backbone.body.model
    native, fixed = timm_model.pretrained_cfg["input_size"][-1], timm_model.pretrained_cfg["fixed_input_size"]
    # a transformer made for one size is embedded square at it; a CNN at its larger aspect view
    assert (view.resize, size) == (
        ("square", native) if fixed else ("aspect", int(round(native * ASPECT_SIDE_SCALE / 32)) * 32)
    )
    assert embedder.mean.flatten().tolist() == pytest.approx(list(timm_model.pretrained_cfg["mean"]))
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        feature_map = embedder.backbone((images - embedder.mean) / embedder.std)
        raw = timm_model.forward_features((images - embedder.mean) / embedder.std)
        out = embedder(images)
    assert feature_map.shape[0] == 2 and feature_map.shape[1] == timm_model.num_features
    assert feature_map.shape[2] * feature_map.shape[3] == tokens and out.shape == (2, timm_model.num_features)
    if pooling == "cls":
        assert torch.allclose(out, raw[:, 0])
    elif raw.ndim == 3:  # patch tokens, the class token left out
        assert torch.allclose(feature_map, tokens_to_map(raw, 1))
        if pooling == "avg":
            assert torch.allclose(out, raw[:, 1:].mean(1), atol=1e-6)
    elif raw.shape[-1] == timm_model.num_features:  # channels last
        assert torch.allclose(feature_map, raw.permute(0, 3, 1, 2))


def test_class_token_pooling_is_refused_for_a_cnn():
    with pytest.raises(CompeteError, match="cls"):
        build_embedder(ModelSettings(backbone="resnet18", pooling="cls", pretrained=False))


def test_safetensors_weights_without_the_classifier_load(tmp_path):
    from safetensors.torch import save_file

    spec = get_spec("resnet18")
    source = build_classifier(spec)
    save_file({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}, tmp_path / "r18.safetensors")
    target = build_classifier(spec)
    assert load_pretrained(spec, target, tmp_path / "r18.safetensors").startswith("file:")
    assert torch.equal(target.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"])


def test_whitening_at_identity_is_the_pretrained_embedding_and_a_fitted_one_shrinks_nuisance():
    from competition.models.projection import LearnedWhitening
    from competition.train.whitening import apply_learned_whitening, fit_learned_whitening

    features = torch.rand(5, 8)
    assert torch.allclose(LearnedWhitening(8)(features), torch.nn.functional.normalize(features))  # unfitted: unchanged

    # Landmarks differ along axes 0-2; photos of one landmark vary strongly along axis 3
    # (light, say), which swamps the landmark signal until the whitening shrinks it.
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 0.3 + 1.0
    labels = np.repeat(np.arange(3), 12)
    features = centres[labels] + rng.normal(0, 0.05, (36, 8)) + np.outer(rng.normal(0, 1.0, 36), np.eye(8)[3])
    mean, matrix, shrinkage = fit_learned_whitening(features, labels, power=1.0)
    assert 0 <= shrinkage <= 1 and matrix.shape == (8, 8)

    def top1(vectors):
        x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = x @ x.T
        np.fill_diagonal(similarity, -np.inf)
        return float((labels[similarity.argmax(1)] == labels).mean())

    assert top1(features) < 0.9 and top1(apply_learned_whitening(features, mean, matrix)) == 1.0
    module = LearnedWhitening(8)
    module.set(mean, matrix)
    assert np.allclose(
        module(torch.from_numpy(features).float()).numpy(), apply_learned_whitening(features, mean, matrix), atol=1e-5
    )


def test_open_clip_image_tower_embeds_with_its_own_normalisation(monkeypatch, tmp_path):
    """open_clip is optional: a stand-in module with its API shows the tower is used as is."""
    import sys
    import types

    class Tower(torch.nn.Module):
        output_dim = 6

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 6)

        def forward(self, images):
            return self.proj(images.mean(dim=(2, 3)))  # signed vectors, as CLIP towers give

    class Clip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = Tower()

    fake = types.ModuleType("open_clip")
    fake.OPENAI_DATASET_MEAN, fake.OPENAI_DATASET_STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    fake.get_model_config = lambda architecture: {"vision_cfg": {"image_size": 64}}
    fake.get_pretrained_cfg = lambda architecture, tag: {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    trained = Clip()
    fake.create_model = lambda architecture, pretrained=None: trained if pretrained else Clip()
    monkeypatch.setitem(sys.modules, "open_clip", fake)

    config = ModelSettings(backbone="open_clip:ViT-Tiny/test", pooling="gem")
    embedder, origin = build_embedder(config)
    assert origin == "open_clip (ViT-Tiny/test)" and model_view(config).size == 64
    assert model_view(config).resize == "square"  # a CLIP tower takes its own size only
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = trained.visual((images - 0.5) / 0.5)
        assert torch.allclose(embedder.eval()(images), expected, atol=1e-6)  # GeM left out: it would clamp
    monkeypatch.delitem(sys.modules, "open_clip")
    monkeypatch.setattr("builtins.__import__", _refuse_open_clip(__import__))
    with pytest.raises(CompeteError, match="pip install open_clip_torch"):
        build_embedder(ModelSettings(backbone="open_clip:ViT-B-32/laion2b_s34b_b79k"))


def _refuse_open_clip(real_import):
    def guarded(name, *args, **kwargs):
        if name == "open_clip":
            raise ImportError("No module named 'open_clip'")
        return real_import(name, *args, **kwargs)

    return guarded


def test_weights_download_into_the_cache_unless_offline(tmp_path, monkeypatch):
    """The hub calls replaced: a first use downloads (torchvision URL, or the timm model's Hugging
    Face repo), --offline / HF_HUB_OFFLINE never does."""
    from safetensors.torch import save_file

    from competition.models import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("COMPETE_OFFLINE", raising=False)
    spec, calls = get_spec("resnet18"), []
    published = build_classifier(spec).state_dict()

    def from_url(url, **kwargs):
        calls.append(url)
        return published

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", from_url)
    target = build_classifier(spec)
    assert load_pretrained(spec, target).startswith("download:https://download.pytorch.org/")
    assert torch.equal(target.state_dict()["fc.weight"], published["fc.weight"]) and len(calls) == 1

    timm_spec = get_spec("test_vit")
    timm_published = build_classifier(timm_spec).state_dict()
    save_file({k: v.contiguous() for k, v in timm_published.items()}, tmp_path / "model.safetensors")
    monkeypatch.setattr(weights, "hub_cached", lambda spec: None)
    monkeypatch.setattr(weights, "download_hub_file", lambda repo, name: calls.append(repo) or tmp_path / name)
    timm_target = build_classifier(timm_spec)
    assert load_pretrained(timm_spec, timm_target) == "download:timm/test_vit.r160_in1k/model.safetensors"
    assert torch.equal(timm_target.state_dict()["head.weight"], timm_published["head.weight"])

    calls.clear()
    for variable in ("COMPETE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(variable, "1")
        for offline_spec in (spec, timm_spec):
            with pytest.raises(WeightsUnavailable, match="--weights"):
                load_pretrained(offline_spec, build_classifier(offline_spec))
        monkeypatch.delenv(variable)
    assert calls == []


def test_precision_picks_the_autocast_type_and_a_cpu_stays_float32(caplog):
    from competition.device import autocast_dtype, autocast_for, compiled

    assert autocast_dtype("auto", bf16_supported=True) == torch.bfloat16
    assert autocast_dtype("auto", bf16_supported=False) == torch.float16  # an older GPU
    assert autocast_dtype("fp16", bf16_supported=True) == torch.float16 and autocast_dtype("fp32", True) is None
    with pytest.raises(CompeteError, match="precision"):
        autocast_dtype("fp8", True)
    with autocast_for(torch.device("cpu"), "bf16"):  # a CPU computes in float32 whatever was asked
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    module = torch.nn.Linear(2, 2)
    assert compiled(module, torch.device("cpu"), wanted=True) is module and "no-op on cpu" in caplog.text


@pytest.mark.parametrize("samples", [40, 300])  # fewer offsets than dimensions (the SVD's way), and more
def test_ledoit_wolf_shrinkage_is_scikit_learns_from_the_spectrum_and_norms(samples):
    from sklearn.covariance import ledoit_wolf_shrinkage as scikit_learns

    from competition.train.whitening import _covariance_spectrum, ledoit_wolf_shrinkage

    offsets = np.random.default_rng(2).normal(size=(samples, 64)) * np.linspace(0.2, 3, 64)
    shrinkage = ledoit_wolf_shrinkage(offsets, _covariance_spectrum(offsets)[0])
    assert 0 < shrinkage < 1 and np.isclose(shrinkage, scikit_learns(offsets, assume_centered=True), rtol=1e-9)


def test_within_landmark_offsets_take_means_from_every_photo_and_sample_past_a_size():
    from competition.train.whitening import within_class_offsets

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 40, 300).astype(str)
    labels[0] = "alone"  # one photo: no offset
    features = rng.normal(size=(300, 6))
    expected = np.concatenate(
        [
            features[labels == c] - features[labels == c].mean(axis=0)
            for c in np.unique(labels)
            if (labels == c).sum() > 1
        ]
    )
    assert np.allclose(within_class_offsets(features, labels), expected)
    sample = within_class_offsets(features, labels, most=50)
    assert len(sample) == 50 and all(np.isclose(expected, row).all(axis=1).any() for row in sample)
