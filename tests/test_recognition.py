"""Recognition submissions (Kaggle's landmark recognition): the file, GAP by hand, the vote,
and train -> submit --format recognition -> validate -> score."""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tiny_config, tiny_submit_config
from typer.testing import CliRunner

from competition.cli import app
from competition.errors import CompeteError
from competition.evaluate.recognition import global_average_precision, read_predictions, render_predictions
from competition.submit.recognition import recognise, vote
from competition.submit.run import submit
from competition.train.loop import train


def test_gap_is_the_hosts_formula_worked_by_hand():
    # by confidence: q1 right, q4 (no training landmark) wrong, q3 right, q2 wrong; q5 made no prediction
    predicted = ["a", "x", "c", None, "y"]
    confidence = np.array([0.9, 0.2, 0.5, 0.0, 0.7])
    truth = ["a", "b", "c", "d", None]
    # P(1) = 1 right; P(3) = 2/3 right; M = 4 queries of training landmarks
    assert global_average_precision(predicted, confidence, truth) == pytest.approx((1 + 2 / 3) / 4)
    assert global_average_precision(["a"], np.array([1.0]), [None]) != global_average_precision(["a"], [1.0], ["a"])


def test_a_recognition_file_round_trips_and_a_bad_cell_names_its_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(render_predictions(["q/1.jpg", "2.png"], ["Eiffel_Tower", "7"], np.array([0.5, 0.25])))
    assert path.read_text().splitlines() == ["id,landmarks", "1,Eiffel_Tower 0.5", "2,7 0.25"]
    assert read_predictions(path) == [("1", "Eiffel_Tower", 0.5), ("2", "7", 0.25)]
    path.write_text("id,landmarks\n1,\n2,7 high\n")
    with pytest.raises(CompeteError, match="line 3: landmarks must be 'landmark confidence', found '7 high'"):
        read_predictions(path)
    with pytest.raises(CompeteError, match="hold whitespace"):
        render_predictions(["1.jpg"], ["Eiffel Tower"], np.array([1.0]))


def test_the_nearest_training_photos_vote_with_their_similarity():
    similarity = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.4]])
    labels = np.array([["a", "b", "b"], ["c", "d", "c"]])
    landmarks, confidence = vote(similarity, labels)
    assert landmarks == ["b", "c"] and np.allclose(confidence, [1.5 / 3, 0.9 / 3])
    queries = np.eye(3, dtype=np.float32)[[0, 2]]
    train = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]] + 0.01
    models = [SimpleNamespace(classifier=None)]
    found, _, how = recognise(models, [1.0], [queries], lambda model: train, np.array(["x", "x", "y", "z"]))
    assert found == ["x", "z"] and how == "vote of the 4 nearest training photos"


def test_train_then_submit_recognition_then_validate_and_score(tiny_competition, tmp_path):
    train(tiny_config(tiny_competition, tmp_path / "runs", "run"), progress=False)
    config = tiny_submit_config(tiny_competition, tmp_path, format="recognition", name="rec")
    result = submit(config, progress=False)
    assert result.path.read_text().startswith("id,landmarks\n")
    assert 0 <= result.scores["gap"] <= 1 and result.scores["landmark_queries"] <= result.scores["queries"]
    assert result.record["recognition"].startswith("label classifier of 1 run")
    assert "| GAP |" in (tmp_path / "board.md").read_text()
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(result.path), "--data", str(tiny_competition)])
    assert checked.exit_code == 0, checked.output
    scored = runner.invoke(app, ["score", str(result.path), "--data", str(tiny_competition)])
    assert scored.exit_code == 0 and f"GAP {result.scores['gap']:.4f} over all" in scored.output
    broken = tmp_path / "broken.csv"
    broken.write_text(result.path.read_text().replace("\n", "\nnowhere,not_a_landmark 0.5\n", 1))
    refused = runner.invoke(app, ["validate", str(broken), "--data", str(tiny_competition)])
    assert refused.exit_code == 1 and "not in train/: not_a_landmark" in refused.output
