"""--log-to: training curves and submit scores reach TensorBoard, MLflow or W&B as well as the leaderboard."""

import sys
import types

import pytest
from conftest import tiny_config

from competition.errors import CompeteError
from competition.settings.submit import SubmitConfig
from competition.submit.run import submit
from competition.tracking import open_tracker
from competition.train.loop import train


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _hparams(folder) -> tuple[dict, list[str]]:
    """The settings add_hparams wrote, and the metric tags it paired them with."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = session.session_start_info.hparams
    settings = {key: getattr(value, value.WhichOneof("kind")) for key, value in hparams.items()}
    return settings, [metric.name.tag for metric in experiment.experiment.metric_infos]


def test_tensorboard_gets_each_epoch_the_final_validation_and_submit_scores(tiny_competition, tmp_path):
    runs = tmp_path / "runs"
    summary = train(tiny_config(tiny_competition, runs, "curves", head="cosface", log_to="tensorboard"), False)
    curves = _scalars(runs / "tensorboard" / "curves")
    assert [step for step, _ in curves["train/loss"]] == [1, 2]  # one point per epoch, in tag groups
    assert {tag.split("/")[0] for tag in curves} == {"train", "val"} and "val/seen_map_at_10" in curves
    assert curves["val/best_unseen_map_at_10"][0][1] == pytest.approx(summary["best"]["unseen_map@10"])
    settings, metrics = _hparams(runs / "tensorboard" / "curves")
    assert settings["head"] == "cosface" and settings["epochs"] == 2 and "val/best_unseen_map_at_10" in metrics
    places = dict(runs_dir=str(runs), submissions_dir=str(tmp_path / "subs"), leaderboard=str(tmp_path / "board.md"))
    settings = SubmitConfig(
        data=str(tiny_competition),
        model=["efficientnet_lite0"],
        name="s",
        image_size=32,
        log_to="tensorboard",
        **places,
    )
    result = submit(settings, progress=False)
    assert _scalars(runs / "tensorboard" / "submit-s")["submit/top1"] == [(0, pytest.approx(result.scores["top1"]))]
    settings, metrics = _hparams(runs / "tensorboard" / "submit-s")
    assert settings["model"] == '["efficientnet_lite0"]' and settings["flip"] == 1 and "submit/top1" in metrics


def test_log_to_is_checked_before_any_work_and_says_when_there_is_nothing_to_log(
    tiny_competition, tmp_path, monkeypatch
):
    places = dict(runs_dir=str(tmp_path / "runs"), submissions_dir=str(tmp_path / "subs"))
    settings = SubmitConfig(data=str(tiny_competition), model=["efficientnet_lite0"], name="s", image_size=32, **places)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "mlflow", None)  # not installed
        with pytest.raises(CompeteError, match="mlflow is not installed"):
            submit(settings.model_copy(update={"log_to": "mlflow"}), progress=False)
        with pytest.raises(CompeteError, match="mlflow is not installed"):
            train(tiny_config(tiny_competition, tmp_path / "runs", "r", log_to="mlflow"), False)
    assert not (tmp_path / "subs").exists() and not (tmp_path / "runs" / "r").exists()  # nothing done, nothing lost
    (tiny_competition / "labels.csv").unlink()
    unlabelled = submit(settings.model_copy(update={"log_to": "tensorboard"}), progress=False)
    assert unlabelled.scores is None and any("nothing logged" in note for note in unlabelled.notes)


def test_mlflow_and_wandb_get_settings_and_metrics(tmp_path, monkeypatch):
    calls = []
    mlflow = types.SimpleNamespace(
        start_run=lambda run_name: calls.append(("start", run_name)),
        log_params=lambda params: calls.append(("params", params)),
        log_metrics=lambda values, step: calls.append(("metrics", values, step)),
        end_run=lambda: calls.append(("end",)),
    )
    run = types.SimpleNamespace(log=lambda values, step: calls.append(("log", values, step)), finish=lambda: None)
    wandb = types.SimpleNamespace(init=lambda **kwargs: calls.append(("init", kwargs)) or run)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    for kind in ("mlflow", "wandb"):
        tracker = open_tracker(kind, "r", tmp_path, {"epochs": 3, "scales": [1.0]})
        tracker.rows([{"epoch": 1, "loss": 0.5, "map@10": float("nan")}, {"epoch": 2, "loss": 0.25}])
        tracker.close()
    assert ("params", {"epochs": "3", "scales": "[1.0]"}) in calls and ("end",) in calls
    assert ("metrics", {"train/loss": 0.5}, 1) in calls  # NaN left out, never sent; the epoch is the step
    assert ("log", {"train/loss": 0.25}, 2) in calls
    assert calls[calls.index(("end",)) + 1][1]["config"] == {"epochs": 3, "scales": "[1.0]"}
    assert open_tracker("", "r", tmp_path, {}) is None
    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    with pytest.raises(CompeteError, match=r"--log-to mlflow: mlflow is not installed \(pip install mlflow\)"):
        open_tracker("mlflow", "r", tmp_path, {})
