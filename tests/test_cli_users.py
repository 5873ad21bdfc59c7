"""What people who live with timm, Typer and Kaggle expect of the command line, tracking and reports."""

import os
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from competition.cli import app

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def test_importing_augmentation_asks_no_network():
    probe = (
        "import urllib.request, warnings\n"
        "calls = []\n"
        "urllib.request.OpenerDirector.open = lambda self, *a, **k: calls.append(a) or 1 / 0\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import competition.augment.transforms\n"
        "print(len(calls), [str(w.message) for w in caught if 'version' in str(w.message)])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "[]"], out.stdout + out.stderr


def test_counts_are_said_with_their_plural():
    from competition.io import counted

    assert [counted(1, "query"), counted(2, "query"), counted(0, "photo"), counted(1200, "day")] == [
        "1 query",
        "2 queries",
        "0 photos",
        "1,200 days",
    ]


def test_models_lists_backbones_without_loading_torch_and_says_weights_as_fields():
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from competition.cli import app\n"
        "result = CliRunner().invoke(app, ['models', '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print([m for m in ('torch', 'timm', 'torchvision') if m in sys.modules])\n"
        "print(result.output)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded, payload = out.split("\n", 1)
    assert loaded == "[]"
    import json

    rows = {row["backbone"]: row["weights"] for row in json.loads(payload)["backbones"]}
    lite0 = rows["efficientnet_lite0"]
    assert lite0["here"] is True and lite0["source"] == "package" and lite0["path"].endswith(".pth")
    assert rows["resnet50"]["here"] in (True, False) and rows["resnet50"]["source"] in ("hub-cache", "download", None)


def test_registered_weight_addresses_are_the_libraries_own(monkeypatch, tmp_path):
    import timm
    import torch
    import torchvision

    from competition.models.catalog import REGISTRY
    from competition.models.weights_lookup import torch_hub_dir

    for spec in REGISTRY.values():
        if spec.source == "torchvision":
            assert spec.weights_at == torchvision.models.get_model_weights(spec.name).DEFAULT.url
        else:
            published = timm.get_pretrained_cfg(spec.name)
            assert spec.weights_at == (published.hf_hub_id if published and published.hf_hub_id else "")
    for variables in ({}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {"TORCH_HOME": str(tmp_path / "th")}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        assert str(torch_hub_dir()) == torch.hub.get_dir()


def test_every_option_of_every_command_says_what_it_does():
    import typer.main

    group = typer.main.get_command(app)
    undocumented = [
        f"{name} {param.opts[0]}"
        for name, command in group.commands.items()
        for param in command.params
        if not getattr(param, "hidden", False) and not param.help and param.param_type_name == "option"
    ]
    assert undocumented == []


def test_a_kaggle_row_with_two_spaces_scores_as_kaggle_scores_it_and_validate_refuses_it(tiny_competition, tmp_path):
    from competition.evaluate.solution import read_solution, score_against_solution

    solution = tmp_path / "solution.csv"
    solution.write_text("id,images,Usage\nq1,a b,Public\n")
    submission = tmp_path / "sub.csv"
    submission.write_text("id,images\nq1,a  b\n")
    # the hosts' metric reads "a  b" as [a, '', b]: the empty id is a wrong answer at rank 2
    assert score_against_solution(submission, read_solution(solution))["public_map@100"] == (1 + 2 / 3) / 2
    printed = invoke("score", submission, "--solution", solution)
    assert printed.exit_code == 0 and "mAP@100 0.8333 (1 query)" in printed.output, printed.output
    as_json = invoke("score", submission, "--solution", solution, "--json")
    assert '"public_queries": 1\n' in as_json.output

    queries = sorted(p.stem for p in (tiny_competition / "query").iterdir())
    gallery = sorted(p.stem for p in (tiny_competition / "gallery").iterdir())
    rows = [f"{q},{gallery[0]} {gallery[1]}" for q in queries]
    rows[0] = f"{queries[0]},{gallery[0]}  {gallery[1]}"
    submission.write_text("id,images\n" + "\n".join(rows) + "\n")
    result = invoke("validate", submission, "--data", tiny_competition)
    assert result.exit_code == 1 and "1 row with an empty id" in result.output and queries[0] in result.output
    assert "not in gallery" not in result.output
    submission.write_text("id,images\n" + "\n".join(f"{q},{gallery[0]} {gallery[1]}" for q in queries) + "\n")
    assert invoke("validate", submission, "--data", tiny_competition).exit_code == 0


def _kaggle_rows(competition):
    queries = sorted(p.stem for p in (competition / "query").iterdir())
    gallery = sorted(p.stem for p in (competition / "gallery").iterdir())
    return "id,images\n" + "\n".join(f"{q},{' '.join(gallery[:3])}" for q in queries) + "\n"


def test_leaderboard_rows_say_their_folder_and_scores_of_two_folders_never_interleave(tiny_competition, tmp_path):
    from competition.evaluate.leaderboard import read_records, render

    board = tmp_path / "board.md"
    submission = tmp_path / "sub.csv"
    submission.write_text(_kaggle_rows(tiny_competition))
    result = invoke("score", submission, "--data", tiny_competition, "--record", "--leaderboard", board)
    assert result.exit_code == 0, result.output
    assert [r["data"] for r in read_records(board)] == ["competition"]

    rows = [{"name": "a", "data": "x", "top1": 0.5}, {"name": "b", "data": "y", "top1": 0.9}]
    rows += [{"name": "c", "data": "x", "top1": 0.7}]
    table_rows = render(rows).splitlines()[-3:]
    assert [row.split(" | ")[0].lstrip("| ") for row in table_rows] == ["c", "a", "b"]


def test_the_demo_keeps_its_own_leaderboard_and_the_tracked_one_is_the_reference_sweeps():
    import inspect
    from pathlib import Path

    from competition.evaluate.leaderboard import read_records, render
    from competition.pipeline import run_demo

    defaults = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}
    assert Path(defaults["leaderboard"]).parent == Path(defaults["submissions_dir"]) != Path("submissions")

    tracked = Path(__file__).parents[1] / "leaderboard.md"
    records = read_records(tracked)
    assert tracked.read_text() == render(records), "leaderboard.md is not what leaderboard.jsonl renders"
    assert {r["data"] for r in records} == {"realdev", "realdev-hr"}
    assert all(r["settings"]["data"].startswith("../shared/realdev") and "demo" not in r["name"] for r in records)


def _help(*command: str) -> str:
    return invoke(*command, "--help", env={"COLUMNS": "200"}).output


def test_help_groups_options_in_named_panels_with_readable_metavars():
    from competition.settings.submit import SubmitConfig
    from competition.settings.train import TrainConfig

    for model in (TrainConfig, SubmitConfig):  # every setting in exactly one panel
        panelled = [name for names in model.PANELS.values() for name in names]
        assert sorted(panelled) == sorted(set(model.model_fields) - set(model.nested()))
    submit, train = _help("submit"), _help("train")
    panels = [line.split("─")[1].strip() for line in submit.splitlines() if line.startswith("╭─")]
    assert panels == [
        "Options", "Model", "Data", "Search", "Output", "Machine", "Off-the-shelf backbones", "Post-processing"
    ]  # fmt: skip
    assert [line.split("─")[1].strip() for line in train.splitlines() if line.startswith("╭─")] == [
        "Options",
        "Model",
        "Data",
        "Training",
        "Validation",
        "Output",
        "Machine",
    ]
    for text in (submit, train):
        assert "<list[" not in text and "<str>" not in text and "(default: (" not in text
        assert "<bool>" not in text.replace("--help", "").split("Show this message")[1]
    row = next(line for line in submit.splitlines() if "--ensemble-weights" in line)
    assert "A,B" in row and "FILE" in next(line for line in submit.splitlines() if "--config" in line)
    # a docstring paragraph is one paragraph for the terminal to wrap, not the source's lines
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        assert "\n" not in (command.help or "").replace("\n\n", ""), name
        assert "default: (" not in _help(name), name


def test_every_commands_help_has_one_style_at_any_width():
    """train's and submit's look everywhere: N/X/TEXT/PATH/NAME for values, nothing after a switch
    (--help included), a choice list beside its flag only whole, one spelling per option shown."""
    import re

    import typer.main

    names = ["", *typer.main.get_command(app).commands]
    for width in ("80", "200"):
        for name in names:
            text = invoke(*([name] if name else []), "--help", env={"COLUMNS": width}).output
            where = f"compete {name} --help at {width} columns"
            assert not re.search(r"<(bool|str|int|float|path|text|list)", text), where
            assert "--k " not in text and "--run-name" not in text and "╭─ Required" not in text, where
            for line in text.splitlines():
                assert line.count("{") == line.count("}"), f"{where}: a choice list wrapped: {line}"
    upload = invoke("upload", "--help", env={"COLUMNS": "200"}).output
    assert re.search(r"--message +TEXT +Required:", upload)
    validate = invoke("validate", "--help", env={"COLUMNS": "200"}).output
    assert re.search(r"--format +NAME .*One of: csv, kaggle, json, recognition\.", validate)
    assert re.search(r"--k(ind|eep)? *-k +N ", validate) is None and re.search(r" -k +N ", validate)


def test_features_help_offers_only_what_features_uses():
    text = invoke("features", "--help", env={"COLUMNS": "200"}).output
    for flag in ("--if-worse", "--ensemble-weights", "--with-pretrained", "--index", "--format", "--leaderboard"):
        assert flag not in text, flag
    assert "ensemble" not in text and "one model" in text


def test_folder_mistakes_say_the_likely_mistake_and_its_fix(tiny_competition, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/sample here
    for command, split in (("train", "train"), ("submit", "query"), ("augment", "train")):
        result = invoke(command, "--data", tiny_competition / split)
        assert result.exit_code == 1, result.output
        assert f"is the {split}/ folder itself" in result.output and f"--data {tiny_competition})" in result.output
    result = invoke("train")
    assert result.exit_code == 1 and "`compete sample-data`" in result.output and "--data <your" in result.output
    for command in ("score", "validate"):
        result = invoke(command, "missing.csv")
        assert result.exit_code == 1 and "missing.csv: submission file not found" in result.output
        assert "data/sample" not in result.output


def test_config_keys_take_negative_flags_suggest_a_typo_and_print_config_round_trips(tmp_path):
    from competition.errors import CompeteError
    from competition.settings.submit import SubmitConfig
    from competition.settings.train import TrainConfig

    assert SubmitConfig.from_dict({"no-flip": True}).flip is False
    assert TrainConfig.from_dict({"no-augmented": True, "train-bn": True}).use_augmented is False
    assert TrainConfig.from_dict({"train-bn": True}).freeze_bn is False
    try:
        SubmitConfig.from_dict({"fliip": True})
    except CompeteError as error:
        assert str(error) == "unknown submit setting 'fliip' (did you mean 'flip'?)"
    else:
        raise AssertionError("a typo was accepted")

    printed = invoke("submit", "-m", "a", "-m", "b", "--no-flip", "--re-ranking", "diffusion", "--print-config")
    assert printed.exit_code == 0, printed.output
    saved = tmp_path / "settings.yaml"
    saved.write_text(printed.output)
    again = invoke("submit", "--config", saved, "--print-config")
    assert again.output == printed.output
    settings = SubmitConfig.from_dict(__import__("yaml").safe_load(printed.output))
    assert settings.model == ["a", "b"] and settings.flip is False and settings.postprocess.re_ranking == "diffusion"


def test_global_flags_work_after_the_command_too(tmp_path):
    from competition.errors import CompeteError

    missing = tmp_path / "missing.csv"
    assert invoke("score", missing).exit_code == 1  # one line, no traceback
    for spelled in (["--debug", "score", missing], ["score", missing, "--debug"]):
        assert isinstance(invoke(*spelled).exception, CompeteError)  # the traceback --debug asks for
    quiet = invoke("submit", "--print-config", "-q", "--offline")
    assert quiet.exit_code == 0 and os.environ.pop("COMPETE_OFFLINE") == "1"
    assert invoke("submit", "--print-config", "--", "--debug").exit_code != 0  # after "--", a value


def _complete(words: str, cwd) -> list[str]:
    import shutil
    from pathlib import Path

    compete = shutil.which("compete", path=str(Path(sys.executable).parent)) or shutil.which("compete")
    cword = len(words.split()) if words.endswith(" ") else len(words.split()) - 1
    env = os.environ | {"_COMPETE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = subprocess.run([compete], env=env, capture_output=True, text=True, timeout=60, cwd=cwd, check=True)
    return result.stdout.split()


def test_shell_completes_backbones_run_folders_and_recipes(tmp_path):
    from competition.augment.recipes import PRESETS

    (tmp_path / "runs" / "lite0-full").mkdir(parents=True)
    (tmp_path / "runs" / "lite0-full" / "config.json").write_text("{}")
    (tmp_path / "runs" / "tensorboard").mkdir()  # not a run
    (tmp_path / "mine.yaml").write_text("steps: []\n")
    assert _complete("compete train --backbone resnet1", tmp_path) == ["resnet18", "resnet101", "resnet152"]
    runs = _complete("compete submit -m ", tmp_path)
    assert runs[0] == "lite0-full" and "efficientnet_lite0" in runs and "tensorboard" not in runs
    assert _complete("compete augment --recipe ", tmp_path) == [*PRESETS, "mine.yaml"]


def test_symlinked_query_and_gallery_folders_are_one_rule_for_every_command(tiny_competition, tmp_path):
    for split in ("query", "gallery"):  # the photos kept elsewhere, linked in
        (tiny_competition / split).rename(tmp_path / f"{split}-elsewhere")
        (tiny_competition / split).symlink_to(tmp_path / f"{split}-elsewhere")
    places = ["--runs-dir", tmp_path / "runs", "--submissions-dir", tmp_path, "--leaderboard", tmp_path / "b.md"]
    made = invoke("submit", "--data", tiny_competition, "--name", "linked", "--image-size", 32, *places)
    assert made.exit_code == 0 and "recorded in" in made.output, made.output
    for command in ("validate", "score"):
        result = invoke(command, tmp_path / "linked.csv", "--data", tiny_competition)
        assert result.exit_code == 0, (command, result.output)
    labels = tiny_competition / "labels.csv"
    labels.write_text(labels.read_text() + "query/../../outside.jpg,x\n")
    for command in ("validate", "score"):
        refused = invoke(command, tmp_path / "linked.csv", "--data", tiny_competition)
        assert refused.exit_code == 1 and "path escapes the competition folder" in refused.output


def test_report_pictures_show_the_first_ten_results_of_a_kaggle_file(tiny_competition, tmp_path):
    from PIL import Image

    from competition.report.sheets import GAP, LABEL_WIDTH

    queries = sorted(p.stem for p in (tiny_competition / "query").iterdir())
    gallery = sorted(p.stem for p in (tiny_competition / "gallery").iterdir())
    assert len(gallery) > 10
    submission = tmp_path / "all.csv"
    submission.write_text("id,images\n" + "\n".join(f"{q},{' '.join(gallery)}" for q in queries) + "\n")
    result = invoke("report", submission, "--data", tiny_competition, "--out", tmp_path / "r", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    tile = 128  # query_sheet's
    assert Image.open(tmp_path / "r" / "queries.png").width == LABEL_WIDTH + (1 + 10) * (tile + GAP)
    three = invoke("report", submission, "--data", tiny_competition, "--out", tmp_path / "r3", "--results", 3)
    assert three.exit_code == 0, three.output
    assert Image.open(tmp_path / "r3" / "queries.png").width == LABEL_WIDTH + (1 + 3) * (tile + GAP)


def test_piped_training_says_one_line_per_epoch_or_per_step(tiny_competition, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="competition.train")
    common = ["--data", tiny_competition, "--runs-dir", tmp_path, "--no-pretrained", "--image-size", 32, "--folds", 2]
    loss_head = invoke("train", *common, "--name", "cosface", "--head", "cosface", "--epochs", 3)
    assert loss_head.exit_code == 0, loss_head.output
    epochs = [r.getMessage() for r in caplog.records if " epoch " in f" {r.getMessage()}"]
    assert [line.split("  loss")[0] for line in epochs] == [
        f"fold {fold}/2  epoch {epoch}/3" for fold in (1, 2) for epoch in (1, 2, 3)
    ]
    caplog.clear()
    whitening = invoke("train", *common, "--name", "whitening")
    assert whitening.exit_code == 0, whitening.output
    steps = [r.getMessage().split("  ")[0] for r in caplog.records if r.name == "competition.train.last_layer"]
    assert steps[:3] == ["fold 1/2", "fold 2/2", "final whitening on 16 photos"]
    assert any(s.startswith("post-processing chosen on 2 folds") for s in steps)


def test_test_time_views_keep_the_length_a_last_layer_projection_was_trained_on():
    import torch

    from competition.retrieval.embed import _embed_views
    from competition.settings.model import View

    flipped = View(8, "square", flip=True)

    def pooled(images):  # a backbone's pooled features: their length carries no meaning, a bias still sees it
        return 10 * images.mean(dim=(2, 3)) + images[:, :, :, :4].mean(dim=(2, 3))

    symmetric = torch.ones(2, 3, 8, 8)
    one_view = pooled(symmetric).numpy()
    assert np.allclose(_embed_views(pooled, [symmetric], torch.device("cpu"), flipped), one_view)
    photo = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    both = [pooled(photo), pooled(torch.flip(photo, dims=[-1]))]
    averaged = _embed_views(pooled, [photo], torch.device("cpu"), flipped)
    lengths = np.mean([v.norm(dim=-1).numpy() for v in both], axis=0)
    directions = np.mean([torch.nn.functional.normalize(v, dim=-1).numpy() for v in both], axis=0)
    assert np.allclose(averaged, directions * lengths[:, None], atol=1e-6)


def test_quick_demo_is_one_run_at_a_small_view_without_augmentation(tmp_path, monkeypatch):
    import json

    from conftest import TINY

    from competition.pipeline import QUICK_VIEW, run_demo

    monkeypatch.chdir(tmp_path)  # the demo's runs/ and submissions/demo/ go here
    said = []
    report = run_demo(tmp_path / "sample", quick=True, sample=TINY, progress=False, echo=said.append)
    assert "2/4 augment: left out (--quick)" in said and not (tmp_path / "sample" / "augmented").exists()
    (run,) = (tmp_path / "runs").glob("demo-*")
    assert json.loads((run / "config.json").read_text())["model"]["image_size"] == QUICK_VIEW
    assert len(list((tmp_path / "submissions" / "demo").glob("*.csv"))) == 2
    assert report.count("\n| ") == 2 and "train (1 run)" in report  # rows: off-the-shelf and the run
