"""The commands after a submission: score, validate, upload, report, leaderboard; and sweep, models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from competition.cli.base import DataOption, JsonOption, _note, _print_json, _progress, _run, app, say
from competition.settings.choices import Format


@app.command()
def score(
    submission: Annotated[Path, typer.Argument(help="Submission file (any format compete writes).")],
    data: DataOption = Path("data/sample"),
    weakest_classes: Annotated[int, typer.Option(help="How many of the worst landmarks to list.")] = 10,
    map_k: Annotated[
        int,
        typer.Option(
            help="Also report mAP@k; 0: as submit does, 100 for a kaggle-format file (what Google Landmark "
            "Retrieval scores), else 10."
        ),
    ] = 0,
    solution: Annotated[
        Optional[Path],
        typer.Option(
            help="A Google Landmark solution file: Retrieval (id,images,Usage, e.g. retrieval_solution_v2.1.csv) "
            "or Recognition (id,landmarks,Usage): print the Public and Private mAP@100 or GAP as Kaggle's "
            "leaderboard computes them (--data not needed)."
        ),
    ] = None,
    record: Annotated[
        bool, typer.Option(help="Also add a row for it to --leaderboard (e.g. when submit could not write it).")
    ] = False,
    leaderboard: Annotated[Path, typer.Option(help="Leaderboard that --record writes to.")] = Path("leaderboard.md"),
    json_out: JsonOption = False,
) -> None:
    """Score a submission against <data>/labels.csv.

    Prints top-1/3/5/10, mAP@10 and precision@10 (all, seen, unseen) and the landmarks with the lowest top-1;
    for a recognition file (id,landmarks), its GAP over all queries and over those of training landmarks.
    """
    from competition.evaluate.recognition import describe_scores, is_recognition, score_predictions
    from competition.evaluate.scoring import left_out_note, score_file
    from competition.report.tables import format_scores

    if solution:
        from competition.evaluate.solution import describe_solution_scores, read_solution, score_against_solution

        kaggle = _run(lambda: score_against_solution(submission, read_solution(solution)))
        if json_out:
            _print_json({"submission": str(submission), "solution": str(solution), "scores": kaggle})
            return
        say("\n".join(describe_solution_scores(kaggle)))
        return
    if record:
        from competition.evaluate.leaderboard import check_leaderboard, record_scored_file

        _run(lambda: check_leaderboard(leaderboard))
    if is_recognition(submission):
        from competition.data.discover import discover_competition

        scores = _run(lambda: score_predictions(submission, discover_competition(data, need_train=False)))
        if record:
            _run(lambda: record_scored_file(leaderboard, submission, scores, data))
        if json_out:
            _print_json({"submission": str(submission), "scores": scores})
        else:
            say(describe_scores(scores))
        return
    scored = _run(lambda: score_file(submission, data, map_k))
    if record:
        _run(lambda: record_scored_file(leaderboard, submission, scored.scores, data))
    if json_out:
        _print_json({"submission": str(submission), "scores": scored.scores, "per_class_top1": scored.per_class})
        return
    say(format_scores(scored.scores))
    if left_out_note(scored.scores):
        _note(left_out_note(scored.scores))
    weakest = sorted(scored.per_class.items(), key=lambda item: (item[1], item[0]))[:weakest_classes]
    if weakest:
        say(
            f"  weakest landmarks (top-1 of their queries, {len(scored.per_class)} in all): "
            + ", ".join(f"{label} {value:.2f}" for label, value in weakest)
        )


@app.command()
def validate(
    submission: Annotated[Path, typer.Argument(help="Submission file (csv, kaggle or json, as compete writes).")],
    data: DataOption = Path("data/sample"),
    k: Annotated[
        Optional[int],
        typer.Option("-k", help="Gallery names expected per query. Default: as many as the first row."),
    ] = None,
    k_long: Annotated[Optional[int], typer.Option("--k", hidden=True)] = None,  # submit's -k spelt long
    fmt: Annotated[
        Optional[Format],
        typer.Option(
            "--format",
            help="The format the file must be in (e.g. kaggle: header id,images, at most 100 ids per row). "
            "Default: what its header says.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Check a submission before upload: every query once, known names only, no repeats, k per row (kaggle: <= 100)."""
    from competition.evaluate.formats import FORMATS
    from competition.evaluate.validate import validate_against

    expected = FORMATS[fmt] if fmt else None
    problems, notes = _run(lambda: validate_against(submission, data, k if k is not None else k_long, expected))
    for note in notes:
        say(f"note: {note}", fg="yellow", err=True)
    if json_out:
        _print_json({"submission": str(submission), "valid": not problems, "problems": problems})
    else:
        for problem in problems:
            say(f"invalid: {problem}", fg="red", err=True)
        if not problems:
            say(f"{submission}: valid")
    if problems:
        raise typer.Exit(1)


@app.command()
def upload(
    submission: Annotated[Path, typer.Argument(help="Submission file to send.")],
    competition: Annotated[str, typer.Option(help="Kaggle competition slug, as in its URL.")],
    message: Annotated[
        str,
        typer.Option(help="Required: the submission's description shown on Kaggle.", show_default=False),
    ] = "",
    old_message: Annotated[str, typer.Option("-m", hidden=True)] = "",
    data: DataOption = Path("data/sample"),
    leaderboard: Annotated[Path, typer.Option(help="Leaderboard whose row records the upload.")] = Path(
        "leaderboard.md"
    ),
    notebook: Annotated[
        str,
        typer.Option(
            help="Code competitions: the owner/slug of the Kaggle notebook that "
            "writes this file (the file name is sent, not the file)."
        ),
    ] = "",
    version: Annotated[
        Optional[int], typer.Option(help="Code competitions: the notebook version. Default: its latest.")
    ] = None,
) -> None:
    """Validate a submission, send it to Kaggle, record the upload in the leaderboard.

    Uses the official kaggle client (the optional kaggle extra) and its credentials (KAGGLE_API_TOKEN,
    ~/.kaggle/access_token, KAGGLE_USERNAME + KAGGLE_KEY or kaggle.json); time, message and file hash go
    beside the submission's leaderboard row.
    """
    from competition.evaluate.upload import upload_submission

    if old_message:  # -m means --model in submit; one meaning across commands
        _note("note: upload -m is deprecated, use --message")
        message = message or old_message
    if not message:
        say("error: --message is required (the description Kaggle shows)", fg="red", err=True)
        raise typer.Exit(2)
    done = _run(
        lambda: upload_submission(
            submission,
            competition,
            message,
            data,
            leaderboard,
            notebook,
            version,
            say=lambda t: say(t, err=True),
        )
    )
    say(f"uploaded {submission} to {competition} (sha256 {done['sha256'][:12]}), recorded in {leaderboard}")


@app.command()
def report(
    submission: Annotated[Path, typer.Argument(help="A scored submission file written by compete submit.")],
    data: DataOption = Path("data/sample"),
    out: Annotated[
        Optional[Path],
        typer.Option(help="Folder for index.html and the PNGs. Default: submissions/reports/<name>."),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where compete submit kept the submission's embeddings.")] = Path(
        "runs"
    ),
    queries: Annotated[int, typer.Option(help="Queries shown with their results (failures first).")] = 16,
    results: Annotated[
        int, typer.Option(min=1, help="Results drawn beside each query, however many the file ranks.")
    ] = 10,
) -> None:
    """Write an HTML report of a submission, with PNGs.

    Queries beside their first results (green right, red wrong), per-landmark accuracy, the confusion matrix and a
    t-SNE map of the gallery embeddings.
    """
    from competition.report.page import write_report

    folder = out or Path("submissions") / "reports" / submission.stem
    page = _run(lambda: write_report(submission, data, folder, runs_dir, queries, results))
    say(f"report written: {page}")


@app.command()
def leaderboard(
    path: Annotated[Path, typer.Argument(help="The leaderboard's Markdown file.")] = Path("leaderboard.md"),
    diff: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Two submission names (or run folders): print every setting that differs, runs' configs included."
        ),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the runs of --diff live.")] = Path("runs"),
    json_out: JsonOption = False,
) -> None:
    """Print the leaderboard, or what differs between two of its entries (--diff A --diff B)."""
    from competition.evaluate.leaderboard import describe_entry, diff_configs, read_records

    if diff:
        if len(diff) != 2:
            say("error: --diff takes exactly two names", fg="red", err=True)
            raise typer.Exit(1)
        first, second = (_run(lambda name=name: describe_entry(name, path, runs_dir)) for name in diff)
        differences = diff_configs(first, second)
        if json_out:
            _print_json({"entries": diff, "differences": differences})
        else:
            say("\n".join(differences) or "no differences")
        return
    if json_out:  # no leaderboard yet is no rows, not an error
        _print_json({"leaderboard": str(path), "rows": _run(lambda: read_records(path)) if path.exists() else []})
    elif not path.exists():
        say(f"{path}: no leaderboard yet, no rows (compete submit writes it)", err=True)
    else:
        say(path.read_text(encoding="utf-8"))


@app.command()
def sweep(
    sweep_file: Annotated[
        Path,
        typer.Argument(
            help="YAML/JSON sweep: off_the_shelf, grid, configurations, train, "
            "submit variants (scripts/sweeps/ has examples)."
        ),
    ],
    dry_run: Annotated[bool, typer.Option(help="Print the configurations and the time estimate, run nothing.")] = False,
    max_minutes: Annotated[
        float,
        typer.Option(
            help="Stop cleanly between configurations once this budget would "
            "be passed (0 = no limit); re-run to continue."
        ),
    ] = 0,
    ensemble_top: Annotated[
        Optional[int],
        typer.Option(help="Also submit the ensemble of the N best runs. Default: the file's ensemble_top."),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            "-d",
            help="Run the sweep on this competition folder instead of the file's; its results go to "
            "runs/sweeps/<name>-<folder name>. Default: the file's data.",
        ),
    ] = None,
) -> None:
    """Train and submit every configuration of a sweep file, then write its results table and chart.

    Re-running skips finished configurations, resumes an interrupted one and retries failed ones. Each row lands
    in the leaderboard too; the table and chart go to runs/sweeps/<name>/results.md and results.png.
    """
    from competition.sweep.plan import load_sweep
    from competition.sweep.runner import run_sweep

    plan = _run(lambda: load_sweep(sweep_file, data))
    report = _run(lambda: run_sweep(plan, max_minutes, ensemble_top, dry_run, progress=_progress(), echo=say))
    if dry_run:
        return
    say(f"\n{report.table}\n\nresults: {report.out_dir / 'results.md'}, {report.out_dir / 'results.png'}")
    if report.outcomes and all(o["status"] != "done" for o in report.outcomes):
        say("error: every row of the sweep failed (reasons in the table)", fg="red", err=True)
        raise typer.Exit(1)


@app.command()
def models(json_out: JsonOption = False) -> None:
    """List the registered backbones, their embedding size, and whether weights are available here."""
    from competition.models.catalog import REGISTRY
    from competition.models.weights_lookup import describe_weights, weights_available
    from competition.retrieval.search import faiss_build

    rows = [{"backbone": s.name, "dim": s.feature_dim, "weights": weights_available(s)} for s in REGISTRY.values()]
    if json_out:
        _print_json({"backbones": rows, "search": faiss_build()})
        return
    say(f"{'backbone':<20} {'dim':>5}  weights here")
    for row in rows:
        say(f"{row['backbone']:<20} {row['dim']:>5}  {describe_weights(row['weights'])}")
    say(
        "and any timm model name (weights from the timm cache or --weights-file FILE), or "
        "open_clip:<architecture>/<tag> with open_clip_torch installed"
    )
    say(f"search: {faiss_build()}")
