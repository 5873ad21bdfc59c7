"""Recognition submissions (Kaggle's landmark recognition): the file, GAP by hand, the vote,
and train -> submit --format recognition -> validate -> score."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tiny_config, tiny_submit_config
from typer.testing import CliRunner

from competition.cli import app
from competition.errors import CompeteError
from competition.evaluate.recognition import global_average_precision, read_predictions, render_predictions
from competition.submit.recognition import VOTERS, recognise, vote
from competition.submit.run import submit
from competition.train.loop import train


def test_gap_is_the_hosts_formula_worked_by_hand():
    # by confidence: q1 right, q4 (no training landmark) wrong, q3 right, q2 wrong; q5 made no prediction
    predicted = ["a", "x", "c", None, "y"]
    confidence = np.array([0.9, 0.2, 0.5, 0.0, 0.7])
    truth = [{"a"}, {"b"}, {"c"}, {"d"}, set()]
    # P(1) = 1 right; P(3) = 2/3 right; M = 4 queries of training landmarks
    assert global_average_precision(predicted, confidence, truth) == pytest.approx((1 + 2 / 3) / 4)
    assert global_average_precision(["a"], np.array([1.0]), [set()]) != global_average_precision(["a"], [1.0], [{"a"}])


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
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert f"confidence that sum divided by the {VOTERS} voters" in readme  # the README says what vote does
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


def test_a_recognition_solution_file_gives_the_hosts_public_and_private_gap(tmp_path):
    """The hosts' own case (DELF's metrics test: GAP 1/6), as a Public leaderboard, and a Private
    one where two predictions tie in confidence: the hosts rank those by id, not by file order."""
    from competition.evaluate.solution import read_solution, score_against_solution

    solution = tmp_path / "recognition_solution.csv"
    solution.write_text(
        "id,landmarks,Usage\n"
        "q1,0 12,Public\nq2,100 200 300,Public\nq3,1,Public\nq4,,Public\nq5,,Public\n"
        "p1,7,Private\np2,8,Private\nskip,9,Ignored\n"
    )
    submission = tmp_path / "rec.csv"
    submission.write_text("id,landmarks\nq2,0 0.01\nq3,1 10\nq4,150 15\np2,8 0.5\np1,6 0.5\nskip,9 99\n")
    scores = score_against_solution(submission, read_solution(solution))
    # Public: q4 (no landmark: wrong) P(1)=0, q3 right P(2)=1/2, q2 wrong; M=3 -> (1/2)/3
    assert scores["public_gap"] == pytest.approx(1 / 6) and scores["public_queries"] == 5
    # Private, tie at 0.5 ranked p1 (wrong) then p2 (right): (1/2)/2; file order would give (1/1)/2
    assert scores["private_gap"] == pytest.approx(1 / 4) and scores["private_queries"] == 2
    printed = CliRunner().invoke(app, ["score", str(submission), "--solution", str(solution)])
    assert printed.exit_code == 0 and printed.output.splitlines() == [
        "Public   GAP 0.1667 (5 queries)",
        "Private  GAP 0.2500 (2 queries)",
    ]
    retrieval = tmp_path / "retrieval_solution.csv"
    retrieval.write_text("id,images,Usage\nq1,a,Public\n")
    printed = CliRunner().invoke(app, ["score", str(submission), "--solution", str(retrieval)])
    assert printed.exit_code == 1 and "is a recognition file (id,landmarks)" in printed.output
    submission.write_text("id,landmarks\nq1,0 1\nq1,12 1\n")
    with pytest.raises(CompeteError, match="1 query listed more than once"):
        score_against_solution(submission, read_solution(solution))
