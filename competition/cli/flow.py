"""The commands of the user's flow: sample data, augment, train, submit, and the demo that chains them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from competition.cli.base import (
    ConfigOption,
    DataOption,
    JsonOption,
    PrintConfigOption,
    _note,
    _print_json,
    _progress,
    _report_skipped,
    _run,
    app,
    say,
)
from competition.cli.complete import COMPLETIONS
from competition.settings.features import FeaturesConfig
from competition.settings.files import read_settings_file
from competition.settings.options import settings_command
from competition.settings.submit import SubmitConfig
from competition.settings.train import TrainConfig


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Option(help="Where to write the embedded landmark set.")] = Path("data/sample"),
    seed: Annotated[int, typer.Option(help="Same seed, same photos, on every machine.")] = 0,
) -> None:
    """Write the embedded landmark set: 50 landmarks in train/, 50 more seen only in query/gallery."""
    from competition.data.sample import SampleConfig, make_sample_competition

    root = _run(lambda: make_sample_competition(out, SampleConfig(seed=seed), progress=_progress()))
    say(f"sample competition ready in {root}")


@app.command()
def augment(
    data: DataOption = Path("data/sample"),
    recipe: Annotated[
        str,
        typer.Option(
            help="Preset (light, default, heavy, classic) or a .yaml/.json recipe file.",
            autocompletion=COMPLETIONS["recipes"],
        ),
    ] = "default",
    target: Annotated[
        Optional[int], typer.Option(help="Images per class, originals included (overrides the recipe).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default <data>/augmented).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed and recipe give the same files.")] = 0,
    workers: Annotated[
        int, typer.Option(help="Processes (default: all cores; 1: this process alone, none started).")
    ] = 0,
    overwrite: Annotated[bool, typer.Option(help="Delete and regenerate an existing augmented folder.")] = False,
    strict: Annotated[
        bool, typer.Option(help="Stop at the first unreadable source photo instead of skipping it.")
    ] = False,
    list_transforms: Annotated[
        bool, typer.Option("--list", help="List every transform and preset, then exit.")
    ] = False,
    preview: Annotated[
        Optional[Path],
        typer.Option(
            help="Write a PNG grid (each step alone on a few training photos, then whole-recipe outputs) to this "
            "path and exit without generating."
        ),
    ] = None,
) -> None:
    """Grow train/ into an augmented set (sources are never modified); re-running resumes."""
    from competition.augment.generate import augment_competition
    from competition.augment.preview import preview_recipe
    from competition.augment.recipes import PRESETS, load_recipe
    from competition.augment.transforms import TRANSFORMS

    if list_transforms:
        for name, definition in TRANSFORMS.items():
            say(f"{definition.group:<11} {name:<20} {definition.about}")
        say("presets: " + ", ".join(f"{n} ({len(r.steps)} steps)" for n, r in PRESETS.items()))
        return
    started = time.time()
    resolved = _run(lambda: load_recipe(recipe, target_per_class=target))
    if preview:
        path = _run(lambda: preview_recipe(data, resolved, preview, seed=seed))
        say(f"preview of recipe {resolved.name} ({len(resolved.steps)} steps) -> {path}")
        return
    result = _run(
        lambda: augment_competition(
            data,
            resolved,
            out,
            seed=seed,
            workers=workers or None,
            overwrite=overwrite,
            strict=strict,
            progress=_progress(),
        )
    )
    counts = result.per_class.values()
    say(
        f"{result.written} written, {result.skipped_existing} already there, {len(result.failed)} skipped "
        f"in {time.time() - started:.1f}s -> {result.out_dir} (recipe {resolved.name}, "
        f"{min(counts)}-{max(counts)} variants per class)"
    )
    _report_skipped(result.failed, "photo or variant", "skipped")


@settings_command(app, TrainConfig, _note, COMPLETIONS)
def train(
    typed,
    config: ConfigOption = None,
    print_config: PrintConfigOption = False,
    resume: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="Continue an interrupted run folder exactly.")
    ] = None,
) -> None:
    """Fine-tune backbone(s); each run keeps config, metrics, curves and the best checkpoint in runs/<name>/.

    Several GPUs (or CPU processes, gloo): torchrun --nproc_per_node N -m competition.cli train --regime full ...
    (--batch-size is per process; rank 0 validates and writes the run folder).
    """
    from competition.train.config import resume_settings, training_settings
    from competition.train.describe import describe_run
    from competition.train.loop import train as train_run

    def runs() -> list[TrainConfig]:  # one per --backbone, every one checked before the first trains
        flags = typed()
        if resume:
            return [resume_settings(resume, flags)]
        backbones, name = flags.pop("backbone", None) or [None], flags.get("run_name")
        several = name and len(backbones) > 1  # one run each: the name gets the backbone's
        named = [
            ({"backbone": one} if one else {}) | ({"run_name": f"{name}-{one}"} if several else {}) for one in backbones
        ]
        return [training_settings(flags | extra, config) for extra in named]

    every_run = _run(runs)
    if print_config:  # one YAML document per run (per --backbone)
        say("---\n".join(settings.to_yaml() for settings in every_run).rstrip("\n"))
        return
    for settings in every_run:
        summary = _run(lambda settings=settings: train_run(settings, resume=bool(resume), progress=_progress()))
        if "rank" in summary:  # a torchrun worker other than rank 0: rank 0 reports
            continue
        _report_skipped(summary["skipped_files"], "unreadable training photo", "skipped")
        lines, warnings = describe_run(summary, settings.runs_dir)
        say("\n".join(lines))
        for warning in warnings:
            say(f"  warning: {warning}", fg="yellow", err=True)


@settings_command(app, SubmitConfig, _note, COMPLETIONS)
def submit(
    typed,
    config: ConfigOption = None,
    print_config: PrintConfigOption = False,
    json_out: JsonOption = False,
) -> None:
    """Rank the gallery for every query, write the submission, score it when labels.csv exists.

    Several GPUs or processes (gloo on CPU, across nodes with torchrun's rendezvous flags):
    torchrun --nproc_per_node N -m competition.cli submit ... (each process embeds its share into the shared
    embedding store; rank 0 fuses, searches, writes and scores).
    """
    from competition.evaluate.formats import FORMATS
    from competition.evaluate.recognition import describe_scores
    from competition.report.tables import format_scores
    from competition.submit.run import submit as run_submit

    settings = _run(lambda: SubmitConfig.from_dict((read_settings_file(config) if config else {}) | typed()))
    if print_config:
        say(settings.to_yaml().rstrip("\n"))
        return
    result = _run(lambda: run_submit(settings, progress=_progress()))
    if result.path is None:  # a torchrun rank other than 0: rank 0 reports
        return
    _report_skipped(result.skipped, "query/gallery image", "unreadable, ranked with zero vectors")
    for note in result.notes:
        say(note, fg="cyan", err=True)
    if json_out:
        payload = {"submission": str(result.path), "scores": result.scores, "skipped": result.skipped}
        _print_json(payload | {"record": result.record, "settings": settings.to_dict()})
        return
    say(f"submission written: {result.path}")
    if result.scores:
        say(format_scores(result.scores) if FORMATS[settings.format].ranks else describe_scores(result.scores))
        say(f"recorded in {settings.leaderboard}")


@settings_command(app, FeaturesConfig, _note, COMPLETIONS)
def features(typed, config: ConfigOption = None, print_config: PrintConfigOption = False) -> None:
    """Embed a competition's photos once into a features folder: train (--regime last) and submit
    then read it as --data without the photos, on another machine.

    The rows are the pretrained backbone's pooled features (float16), training photos at the
    training view and query/gallery photos at submit's view (--flip, --scales): submit the folder with the
    same view settings. --model: a backbone name, or a last-layer run (its backbone's features).
    """
    from competition.submit.features import export_features

    settings = _run(lambda: FeaturesConfig.from_dict((read_settings_file(config) if config else {}) | typed()))
    if print_config:
        say(settings.to_yaml().rstrip("\n"))
        return
    meta = _run(lambda: export_features(settings, progress=_progress()))
    say(f"features written: {meta.parent} (train: compete train --data {meta.parent} --regime last)")


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where the sample competition goes.")] = Path("data/sample"),
    target: Annotated[int, typer.Option(help="Images per class after augmentation.")] = 40,
    epochs: Annotated[
        int, typer.Option(help="Training epochs of the demo's loss-head run (validation keeps the best).")
    ] = 30,
    quick: Annotated[
        bool,
        typer.Option(
            help="A first look in about a minute: no augmentation, the default run only, photos at 128 px "
            "(lower scores than the full demo's)."
        ),
    ] = False,
) -> None:
    """The whole path on the embedded set: sample data, augment, train, submit, leaderboard."""
    from competition.pipeline import run_demo

    started = time.time()
    report = _run(lambda: run_demo(root, target=target, epochs=epochs, quick=quick, progress=_progress(), echo=say))
    say(f"\ndemo finished in {time.time() - started:.0f}s")
    say(report)
