"""The demo: every stage on the embedded landmark set, as a user would chain them."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.sample import SampleConfig, make_sample_competition
from competition.report.tables import comparison_table
from competition.settings.submit import SubmitConfig
from competition.settings.train import TrainConfig
from competition.submit.run import submit
from competition.train.describe import describe
from competition.train.loop import train

RUNS = (
    ("default: learned whitening on the original photos", "auto"),
    ("CosFace head on the augmented set", "cosface"),
)
QUICK_VIEW = 128  # --quick: photos embedded at 128 px, a third of 224's work


def run_demo(
    root: str | Path = "data/sample",
    target: int = 40,
    epochs: int = 30,
    quick: bool = False,
    sample: SampleConfig | None = None,
    runs_dir: str = "runs",
    # its own leaderboard: the tracked leaderboard.md holds the project's reference results
    submissions_dir: str = "submissions/demo",
    leaderboard: str = "submissions/demo/leaderboard.md",
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def stage_done(name: str) -> None:
        nonlocal started
        seconds[name] = time.perf_counter() - started
        started = time.perf_counter()

    """Every stage on the embedded set; `quick`: no augmentation, the default run only, a small view."""
    view = {"image_size": QUICK_VIEW} if quick else {}
    echo(f"1/4 sample data -> {root}")
    make_sample_competition(root, sample or SampleConfig(), progress=progress)
    stage_done("sample data")
    if quick:
        echo("2/4 augment: left out (--quick)")
    else:
        echo(f"2/4 augment (recipe default, {target} per class)")
        augment_competition(
            root, load_recipe("default", target_per_class=target), progress=progress, replace_if_changed=True
        )
    stage_done("augment")
    runs = {}
    for label, head in RUNS[:1] if quick else RUNS:
        echo(f"3/4 train efficientnet_lite0, last layer, {label}")
        config = TrainConfig(
            data=str(root), run_name=f"demo-{stamp}-{head}", runs_dir=runs_dir, epochs=epochs, head=head, **view
        )
        summary = train(config, progress=progress)
        for line in describe(summary["validation"]):
            echo(f"    {line}")
        runs[label] = str(Path(runs_dir) / config.run_name)
    stage_done(f"train ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    echo("4/4 submit (flip TTA): off-the-shelf features, then each run")
    common = dict(data=str(root), submissions_dir=submissions_dir, leaderboard=leaderboard, runs_dir=runs_dir, **view)
    rows, paths = [], []
    for label, model in [("efficientnet_lite0 off-the-shelf (GeM)", "efficientnet_lite0"), *runs.items()]:
        name = f"demo-{stamp}-{'pretrained' if model == 'efficientnet_lite0' else Path(model).name.rsplit('-', 1)[-1]}"
        result = submit(SubmitConfig(model=[model], name=name, **common), progress)
        for note in result.notes:  # which kind of competition submit took it for (--landmarks auto)
            echo(f"    {label}: {note}")
        rows.append((label, result.scores or {}))
        paths.append(str(result.path))
    stage_done(f"submit ({len(rows)} submissions)")
    return (
        f"{comparison_table(rows)}\n\nsubmissions: {', '.join(paths)}\nleaderboard: {leaderboard}\n"
        f"runs: {', '.join(runs.values())}\nseconds per stage: "
        + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items())
    )
