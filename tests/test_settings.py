"""Each setting is declared once (settings/): the CLI options, config files, sweep files and the
checks all come from that declaration."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from pydantic import create_model
from typer.testing import CliRunner

from competition.cli import app
from competition.errors import CompeteError
from competition.settings.base import setting
from competition.settings.choices import FORMATS, INDEXES, LEARNED_POOLINGS, LOSSES, POOLING_NAMES
from competition.settings.files import read_settings_file
from competition.settings.model import ModelSettings
from competition.settings.options import settings_command
from competition.settings.submit import SubmitConfig
from competition.settings.train import TrainConfig

runner = CliRunner()


def test_a_setting_declared_once_is_a_flag_a_config_key_a_sweep_setting_and_checked(tmp_path, monkeypatch):
    extended = create_model(
        "Extended", __base__=TrainConfig, tile_size=(int, setting(7, "Tiles per side of a photo.", ge=1))
    )
    # the flag, its help and default, and the value a command receives
    received = {}
    tool = typer.Typer()

    @settings_command(tool, extended, note=print)
    def go(typed) -> None:
        """Train with tiles."""
        received.update(typed())
        extended.from_dict(received)

    @tool.command()
    def other() -> None:  # a second command keeps `go` a named subcommand
        pass

    help_text = runner.invoke(tool, ["go", "--help"], env={"COLUMNS": "200"}).output
    assert "--tile-size" in help_text and "Tiles per side of a photo." in help_text and "[default: 7]" in help_text
    assert runner.invoke(tool, ["go", "--tile-size", "3"]).exit_code == 0 and received == {"tile_size": 3}
    # the check: one line naming the flag
    with pytest.raises(CompeteError, match=r"--tile-size must be >= 1, not 0"):
        extended.from_dict({"tile_size": 0})
    # a config file, keys spelled as the flags
    config = tmp_path / "config.yaml"
    config.write_text("tile-size: 4\nepochs: 2\n")
    assert extended.from_dict(read_settings_file(config)).tile_size == 4
    # a sweep's grid and shared train settings
    import competition.sweep.plan as plan

    monkeypatch.setattr(plan, "TrainConfig", extended)
    sweep = plan.plan_from_dict({"grid": {"tile_size": [2, 5]}, "train": {"epochs": 1}})
    assert [plan_config.settings["tile_size"] for plan_config in sweep.configurations] == [2, 5]
    assert sweep.train_config(sweep.configurations[1]).tile_size == 5
    with pytest.raises(CompeteError, match="--tile-size"):
        plan.plan_from_dict({"grid": {"tile_size": [0]}})


def test_config_files_take_exactly_the_flag_names():
    group = typer.main.get_command(app)
    for command, model in (("submit", SubmitConfig), ("train", TrainConfig)):
        names = [
            option.opts[0][2:].replace("-", "_")
            for option in group.commands[command].params
            if option.opts[0].startswith("--")
            and not option.hidden
            and option.name not in ("config", "print_config", "json_out")
            and option.name != "resume"
        ]
        keys = model.spellings()
        assert all(name in keys for name in names), [n for n in names if n not in keys]
    settings = SubmitConfig.from_dict({"format": "kaggle", "model": ["a", "b"], "ensemble-weights": [1, 0.5], "qe": 2})
    assert settings.format == "kaggle" and settings.ensemble_weights == [1, 0.5] and settings.postprocess.qe == 2
    assert TrainConfig.from_dict({"name": "x", "use_augmented": False}).run_name == "x"


def test_the_readme_config_example_is_what_submit_reads(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    config = tmp_path / "best.yaml"
    config.write_text("\n".join(line.strip() for line in example.splitlines()))
    settings = SubmitConfig.from_dict(read_settings_file(config))
    assert settings.model == ["runs/lite0", "runs/lite1"] and settings.ensemble_weights == [1, 0.5]
    assert (
        settings.format == "kaggle"
        and settings.postprocess.re_ranking == "k-reciprocal"
        and settings.postprocess.rerank_k1 == 8
    )
    # and through the command: the file's settings reach submit, which stops at the missing runs
    result = runner.invoke(app, ["submit", "--config", str(config), "--data", str(tmp_path / "none")])
    assert result.exit_code == 1 and "none" in result.output and "unknown" not in result.output


def test_old_config_names_still_load_with_a_note(caplog):
    old = SubmitConfig.from_dict({"models": ["a"], "fmt": "json", "weights": [1], "whiten": "gallery"})
    assert old.model == ["a"] and old.format == "json" and old.postprocess.pca_whiten == "gallery"
    assert "'fmt' is now 'format'" in caplog.text and "'whiten' is now 'pca_whiten'" in caplog.text


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"epochs": True}, "--epochs must be a number, not True"),
        ({"regime": "middle"}, "--regime must be one of 'last' or 'full', not 'middle'"),
        ({"lr": float("nan")}, "--lr must be a finite number"),
        ({"shuffle": 1}, "unknown training setting 'shuffle'; the training settings are: backbone, pooling"),
        ({"regime": "full", "head": "whitening"}, "the full regime trains the backbone with a loss"),
    ],
)
def test_one_line_names_the_wrong_setting(settings, message):
    with pytest.raises(CompeteError) as error:
        TrainConfig.from_dict(settings)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_declared_choice_has_an_implementation():
    from competition.evaluate.formats import FORMATS as SUBMISSION_FORMATS, format_of
    from competition.evaluate.recognition import render_predictions
    from competition.evaluate.submission import render_submission
    from competition.models.pooling import POOLINGS, learned, make_pooling
    from competition.retrieval.search import search
    from competition.train.losses import make_loss

    assert set(POOLINGS) == set(POOLING_NAMES)
    for name in POOLING_NAMES:  # a learned pooling is one with `fit`; settings' rule knows them by that fact
        pooling = make_pooling(ModelSettings(pooling=name), channels=8)
        assert learned(pooling) == (name in LEARNED_POOLINGS)
    for name in LOSSES:
        make_loss(name, 8, 3)
    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    for index in INDEXES:
        assert search(vectors[:2], vectors, 3, index=index)[1].shape == (2, 3)
    assert tuple(SUBMISSION_FORMATS) == FORMATS  # each declared format a record, in one order
    for fmt in SUBMISSION_FORMATS.values():  # recognition names a landmark per query, not a ranking
        if fmt.ranks:
            text = render_submission(["q.jpg"], [["g.jpg"]], fmt=fmt)
            assert format_of(Path(f"s{fmt.suffix}"), text) == fmt
            assert fmt.read(Path(f"s{fmt.suffix}"), text) == [(fmt.photo("q.jpg"), [fmt.photo("g.jpg")])]
        else:
            assert format_of(Path(f"s{fmt.suffix}"), render_predictions(["q.jpg"], ["landmark"], np.ones(1))) == fmt


def test_help_lists_choices_and_defaults_and_needs_no_torch():
    bad = runner.invoke(app, ["train", "--head", "bogus"])
    assert bad.exit_code == 2 and "arcface" in bad.output  # the choices are named
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "None" not in text and "[default: 30]" in text and "--freeze-bn" in text and "--train-bn" in text
    heavy = "sorted(m for m in sys.modules if m in ('torch', 'timm', 'pandas'))"
    probe = f"import json, sys; from competition.cli import app; print(json.dumps({heavy}))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert json.loads(loaded.stdout) == []
