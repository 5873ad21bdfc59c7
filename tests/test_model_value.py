"""The model as one value (settings/model.py): declared once, nested in training, stored in best.pt,
its view resolved once (models/view.py), its features cache keyed once (runs.py)."""

import pytest
import torch
import typer
from pydantic import create_model
from typer.testing import CliRunner

from competition.errors import CompeteError
from competition.models.checkpoint import load_run_embedder, save_checkpoint
from competition.models.embedder import build_embedder
from competition.models.view import model_view
from competition.runs import BEST, features_cache
from competition.settings.base import setting
from competition.settings.model import ModelSettings, View
from competition.settings.options import settings_command
from competition.settings.submit import SubmitConfig
from competition.settings.train import TrainConfig


def test_a_new_model_setting_is_a_training_flag_a_saved_value_and_part_of_the_cache_key():
    """What adding a model setting takes: its declaration (here a subclass; in the package one line
    in settings/model.py) and the code where it acts. Flag, file key, help panel, best.pt and the
    features cache's key follow from the declaration."""
    tiled = create_model("Tiled", __base__=ModelSettings, tiles=(int, setting(1, "Tiles per side.", ge=1)))
    training = create_model("TiledTraining", __base__=TrainConfig, model=(tiled, tiled()))
    received = {}
    tool = typer.Typer()

    @settings_command(tool, training, note=print)
    def go(typed) -> None:
        """Train with tiles."""
        received.update(typed())

    @tool.command()
    def other() -> None:  # a second command keeps `go` a named subcommand
        pass

    runner = CliRunner()
    help_text = runner.invoke(tool, ["go", "--help"], env={"COLUMNS": "200"}).output
    model_panel = help_text.split("╭─ Model")[1].split("╰")[0]
    assert "--tiles" in model_panel and "Tiles per side." in model_panel
    assert runner.invoke(tool, ["go", "--tiles", "3", "--gem-p", "4"]).exit_code == 0
    config = training.from_dict(received | {"epochs": 2})
    assert (config.model.tiles, config.model.gem_p, config.epochs) == (3, 4.0, 2)
    assert training.from_dict(config.to_dict()).model == config.model  # as config.json and best.pt keep it
    view = model_view(config.model)
    keys = {features_cache("runs", tiled(tiles=n), "origin", view) for n in (1, 2)}
    assert len(keys) == 2  # vectors pooled with another tiling are never reused
    # what comes after the pooling does not change the pooled features: their cache is shared
    assert features_cache("runs", ModelSettings(embedding_dim=8), "o", view) == features_cache(
        "runs", ModelSettings(embedding_dim=0), "o", view
    )


def test_old_flat_settings_and_flags_land_in_the_model():
    """A 0.3 config.json (flat keys) still reads; flags stay flat on the command line."""
    old = {"backbone": "resnet18", "gem_p": 4.0, "resize": "square", "regime": "last", "head_resolved": "whitening"}
    config = TrainConfig.from_dict(old)
    assert (config.model.backbone, config.model.gem_p, config.model.resize) == ("resnet18", 4.0, "square")
    assert config.flat()["gem_p"] == 4.0 and "model" not in config.flat()
    with pytest.raises(CompeteError, match="--image-size must be 0"):
        TrainConfig.from_dict({"image_size": 16})


def test_submit_takes_the_off_the_shelf_part_of_the_model_and_keeps_its_own_old_flags():
    from competition.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["submit", "--weights", "1,2", "-m", "a", "-m", "b", "--gem-p", "5", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "ensemble-weights:\n- 1.0\n- 2.0" in result.output and "gem-p: 5.0" in result.output
    assert "weights-file: ''" in result.output and "embedding-dim" not in result.output  # not a submit setting
    config = SubmitConfig.from_dict({"gem_p": 5, "pooling": "max"})
    assert config.off_the_shelf_model("resnet18") == ModelSettings(backbone="resnet18", gem_p=5, pooling="max")
    with pytest.raises(CompeteError, match="unknown submit setting 'embedding-dim'"):
        SubmitConfig.from_dict({"embedding_dim": 8})


def test_a_view_is_resolved_once_and_its_tag_names_the_cache():
    lite = ModelSettings()
    assert model_view(lite) == View(384, "aspect")  # lite0's 224 x 384/224
    assert model_view(lite, resize="square") == View(224, "square")
    flipped = model_view(lite, image_size=320, flip=True, scales=[1, 0.5])
    assert flipped.tag == "320-aspect-flip-x1_0.5" and flipped.passes == 4
    assert flipped.key == "|320-aspect-flip-x1_0.5|mean-length"
    assert model_view(lite, device=torch.device("cpu"), precision="fp16").half == ""  # a CPU computes in float32


def _legacy_best(folder, embedder_config: dict, state: dict) -> None:
    """best.pt as compete 0.3 wrote it: one `embedder_config` holding the projection too."""
    folder.mkdir(exist_ok=True)
    save_checkpoint(folder / BEST, {"embedder_config": embedder_config, "embedder": state, "epoch": 1, "scores": {}})


def test_a_run_saved_by_compete_0_3_still_loads_and_embeds_the_same(tmp_path):
    torch.manual_seed(0)
    model = ModelSettings(backbone="resnet18", pretrained=False, embedding_dim=8, image_size=64)
    trained, _ = build_embedder(model, "linear")
    saved = {
        "backbone": "resnet18", "pooling": "gem", "gem_p": 3.0, "projection": "linear", "embedding_dim": 8,
        "image_size": 64, "resize": "aspect", "pretrained": True, "weights_file": None,
    }  # fmt: skip
    _legacy_best(tmp_path / "run", saved, trained.state_dict())
    loaded, settings, _ = load_run_embedder(tmp_path / "run")
    assert settings == model.model_copy(update={"pretrained": False})
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images), trained.eval()(images))
    # a run saved before `resize` existed was fitted on square views; before `projection`, a size meant linear
    _legacy_best(tmp_path / "older", {k: v for k, v in saved.items() if k != "resize"}, trained.state_dict())
    assert load_run_embedder(tmp_path / "older")[1].resize == "square"
    _legacy_best(tmp_path / "oldest", saved | {"projection": "none"}, trained.state_dict())
    assert load_run_embedder(tmp_path / "oldest")[0].output_dim == 8


def test_a_whole_run_folder_as_compete_0_3_wrote_it_loads_for_submit(tmp_path):
    """best.pt with one `embedder_config`, a flat config.json and a summary of verdicts beside
    the signs: submit reads what it needs of each (regime, origin, verdicts), nothing refused."""
    import json

    from competition.runs import CONFIG, SUMMARY, Verdict
    from competition.submit.models import load_model

    torch.manual_seed(0)
    model = ModelSettings(backbone="resnet18", pretrained=False, embedding_dim=8, image_size=64)
    trained, _ = build_embedder(model, "linear")
    saved = {"backbone": "resnet18", "gem_p": 3.0, "projection": "linear", "embedding_dim": 8, "image_size": 64}
    _legacy_best(tmp_path / "old-run", saved, trained.state_dict())
    flat = {"backbone": "resnet18", "regime": "full", "head_resolved": "arcface", "weights_origin": "timm hub"}
    (tmp_path / "old-run" / CONFIG).write_text(json.dumps(flat | {"use_augmented": False}))
    summary = {
        "run": "old-run", "regime": "full", "beats_pretrained": {"seen": True, "unseen": False},
        "validation": {"seen": {"verdict": "better"}, "unseen": {"verdict": "no clear difference"}},
    }  # fmt: skip
    (tmp_path / "old-run" / SUMMARY).write_text(json.dumps(summary))
    loaded = load_model("old-run", SubmitConfig(runs_dir=str(tmp_path)))
    assert (loaded.record.regime, loaded.record.weights_origin, loaded.record.augmentation) == (
        "full",
        "timm hub",
        "none",
    )
    assert not loaded.frozen and loaded.classifier is None and loaded.record.postprocess is None
    assert loaded.record.unseen.verdict is Verdict.UNCLEAR and loaded.record.unseen.beats is False
    assert loaded.record.known.verdict is Verdict.BETTER
    assert loaded.settings.resize == "square"  # saved before `resize` existed: fitted on square views
