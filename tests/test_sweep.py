"""`compete sweep`: plan expansion, resume after a crash, shared caches, failures, budget, the table."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from competition.cli import app
from competition.errors import CompeteError
from competition.io import read_jsonl
from competition.models.embedder import Embedder
from competition.sweep import estimate as sweep_estimate, runner as sweep_runner
from competition.sweep.plan import plan_from_dict
from competition.sweep.runner import run_sweep

TINY_TRAIN = {
    "pretrained": False,
    "image_size": 32,
    "embedding_dim": 16,
    "batch_size": 4,
    "epochs": 2,
    "lr": 0.01,
    "warmup_epochs": 0,
}


def _sweep(data, tmp_path, configurations, **extra) -> dict:
    return {
        "name": "t",
        "data": str(data),
        "runs_dir": str(tmp_path / "runs"),
        "submissions_dir": str(tmp_path / "subs"),
        "leaderboard": str(tmp_path / "board.md"),
        "train": TINY_TRAIN,
        "configurations": configurations,
        "submit": [{"name": "plain", "flip": False, "k": 3}],
        **extra,
    }


@pytest.fixture(autouse=True)
def steady_throughput(monkeypatch):
    """The estimate's probe runs the backbone on random tensors; the tests count real forwards."""
    monkeypatch.setattr(sweep_estimate, "measure_throughput", lambda model, device: 100.0)


def test_plan_expands_the_grid_and_checks_every_setting_first(tmp_path):
    data = {
        "name": "p",
        "off_the_shelf": ["efficientnet_lite0"],
        "grid": {"backbone": ["efficientnet_lite0", "efficientnet_lite1"], "regime": ["last", "full"]},
        "configurations": [{"regime": "last", "head": "arcface", "augment": "light"}],
        "train": {"epochs": 3},
    }
    plan = plan_from_dict(data)
    assert [c.regime for c in plan.configurations] == ["off-the-shelf", "last", "full", "last", "full", "last"]
    assert len({c.id for c in plan.configurations}) == 6
    assert [c.id for c in plan_from_dict(data).configurations] == [c.id for c in plan.configurations]  # stable
    assert plan.configurations[-1].augment == "light" and "head=arcface" in plan.configurations[-1].label
    assert plan.train_config(plan.configurations[1]).epochs == 3
    with pytest.raises(CompeteError, match="unknown sweep key"):
        plan_from_dict(data | {"grids": {}})
    with pytest.raises(CompeteError, match="lr must be"):
        plan_from_dict(data | {"train": {"lr": -1}})
    with pytest.raises(CompeteError, match="run_name"):
        plan_from_dict(data | {"configurations": [{"run_name": "x"}]})
    with pytest.raises(CompeteError, match="same configuration twice"):
        plan_from_dict(data | {"configurations": [{"head": "softmax"}, {"head": "softmax"}]})
    with pytest.raises(CompeteError, match="unknown submit setting"):
        plan_from_dict(data | {"submit": [{"name": "x", "shuffle": True}]})


def test_resume_after_a_crash_and_shared_features(tiny_competition, tmp_path, monkeypatch):
    keep = [{"name": "plain", "flip": False, "k": 3, "if_worse": "keep"}]  # tiny runs cannot show they help
    plan = plan_from_dict(
        _sweep(tiny_competition, tmp_path, [{"head": "whitening"}, {"head": "softmax"}], submit=keep, ensemble_top=2)
    )
    trained = []
    real_train = sweep_runner.train

    def crashing_train(config, **kwargs):
        trained.append(config.run_name)
        if len(trained) == 2:
            raise KeyboardInterrupt  # killed during the second configuration
        return real_train(config, **kwargs)

    monkeypatch.setattr(sweep_runner, "train", crashing_train)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, progress=False, echo=lambda line: None)
    first = read_jsonl(plan.out_dir / "results.jsonl")
    assert [(o["id"], o["status"]) for o in first] == [(plan.configurations[0].id, "done")]

    forwards = []
    real_pooled = Embedder.pooled
    monkeypatch.setattr(
        Embedder, "pooled", lambda self, images: forwards.append(len(images)) or real_pooled(self, images)
    )
    trained.clear()
    monkeypatch.setattr(
        sweep_runner, "train", lambda config, **kwargs: trained.append(config.run_name) or real_train(config, **kwargs)
    )
    report = run_sweep(plan, progress=False, echo=lambda line: None)
    assert trained == [plan.run_name(plan.configurations[1])]  # the finished one was skipped
    assert forwards == []  # the second head reads the first one's cached features and embeddings
    assert [o["status"] for o in report.outcomes] == ["done", "done", "done"]
    assert report.outcomes[-1]["regime"] == "ensemble" and "ensemble of the 2 best runs" in report.table
    assert "| efficientnet_lite0 last (head=softmax)" in report.table and "**" in report.table
    assert (plan.out_dir / "results.png").stat().st_size > 1000
    board = (tmp_path / "board.jsonl").read_text().splitlines()
    assert len(board) == 3  # each configuration and the ensemble landed in the leaderboard once

    probes = []
    monkeypatch.setattr(sweep_estimate, "measure_throughput", lambda *args: probes.append(args) or 100.0)
    again = run_sweep(plan, progress=False, echo=lambda line: None)
    assert trained == [plan.run_name(plan.configurations[1])] and len(again.outcomes) == 3  # nothing re-ran
    assert probes == [] and again.estimates == {c.id: 0.0 for c in plan.configurations}  # nor was it timed


def test_a_failing_configuration_is_recorded_and_the_sweep_goes_on(tiny_competition, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPETE_OFFLINE", "1")
    plan = plan_from_dict(
        _sweep(
            tiny_competition,
            tmp_path,
            [{"backbone": "resnet18", "pretrained": True}, {"head": "whitening"}],
            ensemble_top=2,
        )
    )
    lines = []
    report = run_sweep(plan, progress=False, echo=lines.append)
    failed, done = report.outcomes[0], report.outcomes[1]
    assert failed["status"] == "failed" and "resnet18" in failed["reason"] and "\n" not in failed["reason"]
    assert done["status"] == "done" and done["scores"]["top1"] >= 0
    assert "failed: " in report.table and any("failed" in line for line in lines)
    assert len(report.outcomes) == 2  # one run finished: no ensemble of one


def test_budget_stops_between_configurations(tiny_competition, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_estimate, "measure_throughput", lambda model, device: 0.01)
    plan = plan_from_dict(_sweep(tiny_competition, tmp_path, [{"head": "whitening"}]))
    report = run_sweep(plan, max_minutes=1, progress=False, echo=lambda line: None)
    assert report.outcomes == [] and "stopped before" in report.stopped_early and "re-run" in report.stopped_early


def test_cli_dry_run_prints_the_plan_and_the_estimate(tiny_competition, tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        json.dumps(_sweep(tiny_competition, tmp_path, [{"head": "whitening"}], off_the_shelf=["efficientnet_lite0"]))
    )
    result = CliRunner().invoke(app, ["sweep", str(sweep_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "efficientnet_lite0-off-the-shelf" in result.output and "estimate:" in result.output
    assert not (tmp_path / "runs" / "sweeps").exists()  # nothing ran


def test_data_override_runs_a_sweep_file_on_another_folder_under_its_own_name(tiny_competition, tmp_path):
    import yaml

    from competition.sweep.plan import load_sweep

    sweep_file = tmp_path / "closed.yaml"
    sweep_file.write_text(yaml.safe_dump(_sweep("elsewhere", tmp_path, [{"head": "whitening"}]) | {"name": "closed"}))
    assert load_sweep(sweep_file).file.data == "elsewhere"
    plan = load_sweep(sweep_file, tiny_competition)
    assert plan.file.data == str(tiny_competition) and plan.file.name == f"closed-{tiny_competition.name}"
    assert plan.out_dir.name == f"closed-{tiny_competition.name}"  # never the results of the file's own folder
    result = CliRunner().invoke(app, ["sweep", str(sweep_file), "--data", str(tmp_path / "nowhere"), "--dry-run"])
    assert result.exit_code == 1 and "nowhere" in result.output


def test_every_shipped_sweep_file_is_checked_and_expands():
    """The sweep files in scripts/sweeps/ (the compare scripts' replacements among them) use only
    settings that exist, with values in range: a renamed setting would fail here, not in a user's run."""
    from competition.sweep.plan import load_sweep

    shipped = sorted((Path(__file__).resolve().parent.parent / "scripts" / "sweeps").glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"quick", "augmentation", "training", "postprocessing"}
    for path in shipped:
        plan = load_sweep(path)
        assert plan.configurations and plan.variants, path


def test_a_sweep_never_replaces_results_it_did_not_write(tiny_competition, tmp_path):
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "results.md").write_text("my own results\n")
    plan = plan_from_dict(_sweep(tiny_competition, tmp_path, [{"head": "whitening"}], out=str(notes)))
    with pytest.raises(CompeteError, match="results.md was not written by a sweep: not replaced"):
        run_sweep(plan, progress=False, echo=lambda line: None)
    assert (notes / "results.md").read_text() == "my own results\n" and not (tmp_path / "runs").exists()


def test_the_estimate_counts_a_cache_once_by_the_caches_own_key(tiny_competition, tmp_path):
    """Two heads on one frozen model share its features; another GeM exponent or view does not."""
    configurations = [{"head": "whitening"}, {"head": "softmax"}, {"gem_p": 4.0}, {"image_size": 64}]
    plan = plan_from_dict(_sweep(tiny_competition, tmp_path, configurations))
    estimates = list(sweep_estimate.estimate_seconds(plan, torch.device("cpu")).values())
    assert estimates[0] > 0 and estimates[1] == 0 and estimates[2] == estimates[0] and estimates[3] > 0
