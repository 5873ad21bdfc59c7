"""The demo: every stage on the embedded landmark set, as a user would chain them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.sample import make_sample_competition
from competition.retrieval.postprocess import PostProcess
from competition.retrieval.submit import SubmitConfig, submit
from competition.train.config import TrainConfig
from competition.train.loop import train


def comparison_table(rows: list[tuple[str, dict]]) -> str:
    """Markdown table of top-1/3/10 for all, seen and unseen queries, one row per method."""
    groups = [("", "all"), ("seen_", "seen"), ("unseen_", "unseen")]
    header = "| method | " + " | ".join(f"{g} top-1/3/10" for _, g in groups) + " |"
    lines = [header, "|---|" + "---|" * len(groups)]
    for method, scores in rows:
        cells = ["/".join(f"{scores.get(f'{p}top{k}', float('nan')):.3f}" for k in (1, 3, 10)) for p, _ in groups]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(root: str | Path = "data/sample", target: int = 40, epochs: int = 30, runs_dir: str = "runs",
             submissions_dir: str = "submissions", leaderboard: str = "leaderboard.md", progress: bool = True,
             echo: Callable[[str], None] = print) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    echo(f"1/4 sample data -> {root}")
    make_sample_competition(root, progress=progress)
    echo(f"2/4 augment (recipe default, {target} per class)")
    augment_competition(root, load_recipe("default", target_per_class=target), progress=progress,
                        replace_if_changed=True)
    echo("3/4 train efficientnet_lite0, last-layer regime")
    config = TrainConfig(data=str(root), run_name=f"demo-{stamp}", runs_dir=runs_dir, epochs=epochs)
    summary = train(config, progress=progress)
    echo(f"    best epoch {summary['best_epoch']}, held-out classes top-1 "
         f"{summary['best'].get('unseen_top1', float('nan')):.3f} vs pretrained "
         f"{summary['baseline'].get('unseen_top1', float('nan')):.3f}")
    echo("4/4 submit: off-the-shelf features, then the trained run")
    common = dict(data=str(root), submissions_dir=submissions_dir, leaderboard=leaderboard, runs_dir=runs_dir)
    baseline = submit(SubmitConfig(models=["efficientnet_lite0"], name=f"demo-{stamp}-pretrained", **common), progress)
    run = str(Path(runs_dir) / config.run_name)
    trained = submit(SubmitConfig(models=[run], name=f"demo-{stamp}-trained", **common), progress)
    # The same embeddings (cached), re-ranked: square-root PCA-whitening and DBA cost a second.
    polished = submit(SubmitConfig(models=[run], name=f"demo-{stamp}-trained-whiten-dba",
                                   postprocess=PostProcess(whiten="gallery", dba=2), **common), progress)
    table = comparison_table([("efficientnet_lite0 off-the-shelf (GeM)", baseline.scores or {}),
                              (f"trained last layer ({config.run_name})", trained.scores or {}),
                              ("trained + PCA-whitening (gallery) + DBA", polished.scores or {})])
    return (f"{table}\n\nsubmissions: {baseline.path}, {trained.path}, {polished.path}\nleaderboard: {leaderboard}\n"
            f"training curves: {Path(runs_dir) / config.run_name / 'curves.png'}")
