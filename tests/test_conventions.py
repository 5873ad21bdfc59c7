"""What Python and Kaggle users expect of an installed CLI: real defaults and choices in
--help, shell completion, --json for scripts, one meaning per flag, per-epoch lines when
nobody watches a progress bar, declared dependencies, no POSIX-only modules, a clean lint."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
import typer
from typer.testing import CliRunner

from competition.cli import app
from competition.settings.choices import IF_WORSE

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _options(command: str) -> dict:
    """{parameter name: click parameter} of one command."""
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def test_shell_completion_lists_choices(tmp_path):
    compete = shutil.which("compete", path=str(Path(sys.executable).parent)) or shutil.which("compete")
    assert compete, "the compete script is installed with the package"
    env = os.environ | {
        "_COMPETE_COMPLETE": "complete_bash",
        "COMP_WORDS": "compete submit --if-worse ",
        "COMP_CWORD": "3",
    }
    result = subprocess.run([compete], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and set(result.stdout.split()) == set(IF_WORSE)
    assert "--install-completion" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output


def test_json_outputs_parse(tiny_competition, tmp_path):
    common = ["--data", str(tiny_competition), "--runs-dir", str(tmp_path / "runs")]
    board = tmp_path / "board.md"
    result = runner.invoke(
        app,
        [
            "submit",
            *common,
            "--submissions-dir",
            str(tmp_path / "subs"),
            "--leaderboard",
            str(board),
            "--name",
            "lite0",
            "-k",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)
    assert submitted["scores"]["top1"] >= 0 and Path(submitted["submission"]).is_file()
    assert submitted["settings"]["k"] == 3 and submitted["settings"]["postprocess"]["pca_whiten"] == "off"

    scored = json.loads(
        runner.invoke(app, ["score", submitted["submission"], "--data", str(tiny_competition), "--json"]).stdout
    )
    assert "p@10" not in scored["scores"] and "top10" not in scored["scores"]  # k=3 supports neither
    assert scored["scores"]["top3"] >= scored["scores"]["top1"]
    assert scored["scores"]["top1"] == submitted["scores"]["top1"]
    assert scored["scores"]["unseen_map@10"] == pytest.approx(submitted["scores"]["unseen_map@10"])
    assert scored["per_class_top1"] and all(0 <= v <= 1 for v in scored["per_class_top1"].values())

    valid = json.loads(
        runner.invoke(app, ["validate", submitted["submission"], "--data", str(tiny_competition), "--json"]).stdout
    )
    assert valid == {"submission": submitted["submission"], "valid": True, "problems": []}
    broken = tmp_path / "broken.csv"
    broken.write_text("query,rank_1\nnot-a-query.jpg,x.jpg\n")
    invalid = runner.invoke(app, ["validate", str(broken), "--data", str(tiny_competition), "--json"])
    assert invalid.exit_code == 1 and json.loads(invalid.stdout)["valid"] is False

    rows = json.loads(runner.invoke(app, ["leaderboard", str(board), "--json"]).stdout)["rows"]
    assert [r["name"] for r in rows] == ["lite0"] and rows[0]["top1"] == submitted["scores"]["top1"]


def test_submit_config_file_with_flags_over_it(tiny_competition, tmp_path):
    settings = tmp_path / "submit.yaml"
    settings.write_text(
        f"data: {tiny_competition}\nk: 4\nflip: false\nname: from-file\nqe: 1\n"
        f"submissions_dir: {tmp_path / 'subs'}\nleaderboard: {tmp_path / 'board.md'}\n"
        f"runs_dir: {tmp_path / 'runs'}\n"
    )
    result = runner.invoke(app, ["submit", "--config", str(settings), "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    used = json.loads(result.stdout)["settings"]
    assert used["k"] == 2 and used["flip"] is False and used["name"] == "from-file"  # typed flag wins, file stays
    assert used["postprocess"]["qe"] == 1
    settings.write_text("k: 2\nshuffle: true\n")
    refused = runner.invoke(app, ["submit", "--config", str(settings)])
    assert refused.exit_code == 1 and "shuffle" in refused.output


def test_old_flag_spellings_still_work_with_a_note(tiny_competition, tmp_path):
    common = [
        "--data",
        str(tiny_competition),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--submissions-dir",
        str(tmp_path / "subs"),
        "--leaderboard",
        str(tmp_path / "board.md"),
        "-k",
        "2",
        "--no-flip",
    ]
    result = runner.invoke(
        app,
        [
            "submit",
            *common,
            "-m",
            "efficientnet_lite0",
            "-m",
            "efficientnet_lite0",
            "--weights",
            "1,0",
            "--name",
            "old",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "--ensemble-weights" in result.stderr and json.loads(result.stdout)["record"]["weights"] == [1.0, 0.0]
    upload = runner.invoke(
        app,
        [
            "upload",
            str(tmp_path / "subs" / "old.csv"),
            "--competition",
            "x",
            "-m",
            "v1",
            "--data",
            str(tiny_competition),
        ],
        env={"KAGGLE_API_TOKEN": "", "HOME": str(tmp_path)},
    )
    assert "upload -m is deprecated" in upload.stderr and "credentials" in upload.output  # the message was taken


def test_one_line_per_epoch_when_stderr_is_not_a_terminal(tiny_competition, tmp_path):
    command = [
        sys.executable,
        "-m",
        "competition.cli",
        "train",
        "--data",
        str(tiny_competition),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "piped",
        "--regime",
        "full",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--no-pretrained",
        "--no-augmented",
        "--no-wise-ft",
        "--workers",
        "0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tiny_competition.parent.parent)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if re.search(r"epoch \d/2\s+loss [\d.]+ .* \d+ s$", line)]
    assert len(lines) == 2 and "map@10" in lines[0]


def _imports(path: Path) -> set[str]:
    """Top-level modules a source file imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {_normalise(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}
    installed = packages_distributions()
    undeclared = []
    for module in sorted(set().union(*(_imports(p) for p in (ROOT / "competition").rglob("*.py")))):
        if module in sys.stdlib_module_names or module in ("competition", "__future__"):
            continue
        distributions = {_normalise(d) for d in installed.get(module, [])}
        if not distributions & declared and not any(d.startswith(_normalise(module)) for d in declared):
            undeclared.append(f"{module} ({', '.join(sorted(distributions)) or 'not installed'})")
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_no_posix_only_modules():
    """fcntl, termios, pwd... do not exist on Windows: a writing command must not need them. The one
    exception, io.py's flock (locks that leave no file behind), falls back to filelock elsewhere."""
    posix_only = {"fcntl", "termios", "pwd", "grp", "resource", "tty", "pty"}
    used = {str(p.relative_to(ROOT)): _imports(p) & posix_only for p in (ROOT / "competition").rglob("*.py")}
    assert {p: m for p, m in used.items() if m} == {"competition/io.py": {"fcntl"}}
    assert 'if os.name != "posix":' in (ROOT / "competition" / "io.py").read_text()


def test_lint_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff comes with the dev extra"
    result = subprocess.run(
        [ruff, "check", "competition", "scripts", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:]
