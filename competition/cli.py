"""The `compete` command: one small function per step, each a thin layer over the Python API."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from competition.errors import CompeteError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Landmark image retrieval: augment a training set, train backbones, submit ranked results.",
)
_state = {"debug": False}

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="Competition folder: train/<class>/*, query/*, gallery/*, optional labels.csv (see data/README.md).",
    ),
]


def _run(action):
    """Run a command body; a CompeteError or an OS error (disk full, permission) becomes one
    line on stderr and exit code 1. Files are written atomically, so nothing half-written stays."""
    try:
        return action()
    except (CompeteError, OSError) as error:
        if _state["debug"]:
            raise
        message = (
            str(error)
            if isinstance(error, CompeteError)
            else (f"{error.filename}: {error.strerror}" if error.filename else f"{type(error).__name__}: {error}")
        )
        typer.secho(f"error: {message}", fg="red", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as stop:
        how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
        typer.secho(f"{how}: finished files are kept; re-run the same command to continue", err=True)
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, a scheduler's kill) taken as Ctrl-C is: worker pools are stopped,
    finished files kept, and one line says how to go on, instead of dying mid-write."""


def _stop_on_sigterm() -> None:
    import signal
    import threading

    def handler(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never download weights (also COMPETE_OFFLINE=1 or HF_HUB_OFFLINE=1).")
    ] = False,
) -> None:
    _state["debug"] = debug
    _stop_on_sigterm()
    if offline:
        os.environ["COMPETE_OFFLINE"] = "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    if not quiet and not sys.stderr.isatty():  # no progress bar (nohup, CI, a notebook): a line per epoch instead
        logging.getLogger("competition.train").setLevel(logging.INFO)
    _state["progress"] = not quiet


def _progress() -> bool:
    """Progress on stderr: bars on a terminal, a line every few seconds of long work when piped."""
    return _state.get("progress", True)


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Option(help="Where to write the embedded landmark set.")] = Path("data/sample"),
    seed: Annotated[int, typer.Option(help="Same seed, same photos, on every machine.")] = 0,
) -> None:
    """Write the embedded landmark set: 50 landmarks in train/, 50 more seen only in query/gallery."""
    from competition.data.sample import SampleConfig, make_sample_competition

    root = _run(lambda: make_sample_competition(out, SampleConfig(seed=seed), progress=_progress()))
    typer.echo(f"sample competition ready in {root}")


@app.command()
def augment(
    data: DataOption = Path("data/sample"),
    recipe: Annotated[
        str, typer.Option(help="Preset (light, default, heavy, classic) or a .yaml/.json recipe file.")
    ] = "default",
    target: Annotated[
        Optional[int], typer.Option(help="Images per class, originals included (overrides the recipe).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default <data>/augmented).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed and recipe give the same files.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes (default: all cores).")] = 0,
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
            typer.echo(f"{definition.group:<11} {name:<20} {definition.about}")
        typer.echo("presets: " + ", ".join(f"{n} ({len(r.steps)} steps)" for n, r in PRESETS.items()))
        return
    started = time.time()
    resolved = _run(lambda: load_recipe(recipe, target_per_class=target))
    if preview:
        path = _run(lambda: preview_recipe(data, resolved, preview, seed=seed))
        typer.echo(f"preview of recipe {resolved.name} ({len(resolved.steps)} steps) -> {path}")
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
    typer.echo(
        f"{result.written} written, {result.skipped_existing} already there, {len(result.failed)} skipped "
        f"in {time.time() - started:.1f}s -> {result.out_dir} (recipe {resolved.name}, "
        f"{min(counts)}-{max(counts)} variants per class)"
    )
    _report_skipped(result.failed, "photo(s) or variant(s) skipped")


# Choices spelled here so `--help` and shell completion list them without importing torch;
# tests/test_cli.py checks each against the library's own tuple.
Regime = Literal["last", "full"]
Head = Literal["auto", "whitening", "softmax", "arcface", "cosface", "subcenter-arcface", "triplet"]
Pooling = Literal["gem", "avg", "max", "cls"]
Resize = Literal["square", "aspect"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="CUDA mixed precision: auto (bf16 where the GPU has it, else fp16), fp32, bf16 or fp16. "
        "A CPU computes in float32 whatever this says."
    ),
]
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the model on CUDA (minutes to compile, faster after); no-op on CPU.",
    ),
]
Format = Literal["csv", "kaggle", "json"]
IfWorse = Literal["fallback", "ensemble", "keep"]
Index = Literal["auto", "exact", "ivf", "ivfpq", "hnsw"]
Whiten = Literal["off", "gallery", "query+gallery"]
Landmarks = Literal["auto", "known", "new", "mixed"]
LandmarksOption = Annotated[
    Landmarks,
    typer.Option(
        help="Are the queries' landmarks those of train/? known: all are (closed set; class posteriors fused "
        "into the ranking); new: none is (labels never used); mixed: some are; auto: estimated from the queries."
    ),
]

DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or mps ('' = CUDA when present).")]
WorkersOption = Annotated[
    int, typer.Option(help="Image-loading processes: 0 loads in the main process, -1 picks from the cores and device.")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (messages go to stderr), for scripts.")
]
ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        help="YAML/JSON file of settings (a run's own config.json works for train); flags typed here override it."
    ),
]


def _typed(ctx: typer.Context) -> set[str]:
    """The parameters the user typed: defaults must not override a config file or a resumed run."""
    # compared by name: typer vendors its own click, whose ParameterSource is another class
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    }


def _typed_settings(ctx: typer.Context, renamed: dict[str, str], convert: dict, skip: set[str]) -> dict:
    """{setting: value} for the parameters the user typed. `renamed` maps a parameter to its
    setting (old spellings included), `convert` turns a parameter's value into the setting's
    (paths become strings), `skip` names parameters that are not settings."""
    return {renamed.get(name, name): convert.get(name, _plain)(ctx.params[name]) for name in _typed(ctx) - skip}


def _deprecated(old: str, new: str) -> None:
    typer.secho(f"note: {old} is deprecated, use {new}", fg="yellow", err=True)


def _print_json(payload: dict) -> None:
    """One JSON object on stdout; NaN (a score with no queries to average) becomes null, as strict JSON wants."""
    from competition.io import json_text

    typer.echo(json_text(payload, indent=1))


@app.command()
def train(
    ctx: typer.Context,
    data: DataOption = Path("data/sample"),
    backbone: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Backbone (repeat to train several for an ensemble); `compete models` lists them.",
            show_default="efficientnet_lite0",
        ),
    ] = None,
    regime: Annotated[
        Regime, typer.Option(help="last: frozen backbone, cached features, head only; full: all layers.")
    ] = "last",
    name: Annotated[str, typer.Option(help="Run name under runs/ (default <backbone>-<regime>-<time>).")] = "",
    epochs: Annotated[
        int, typer.Option(help="Loss heads and the full regime: epochs (validation picks the best).")
    ] = 30,
    image_size: Annotated[
        int,
        typer.Option(
            help="Embedding view size in pixels: the longer side for --resize aspect, the square's side for "
            "square (0: the backbone's own, lite0: 384 aspect / 224 square); the full regime's training crops."
        ),
    ] = 0,
    resize: Annotated[
        Resize,
        typer.Option(
            help="aspect: photos embedded at their own aspect ratio (never enlarged past their size); "
            "square: squashed to a square. Submit uses the run's own."
        ),
    ] = "aspect",
    embedding_dim: Annotated[
        int, typer.Option(help="Projection size of loss heads; 0 = pooled backbone feature.")
    ] = 512,
    head: Annotated[
        Head,
        typer.Option(
            help="auto: whitening in the last regime, softmax in the full. whitening: "
            "learned whitening fitted in closed form (last regime); softmax, arcface, "
            "cosface, subcenter-arcface (classifier heads) or triplet (hard-negative mining, no "
            "classifier): trained with that loss."
        ),
    ] = "auto",
    whiten_power: Annotated[
        float,
        typer.Option(help="Learned whitening strength: 1 full, 0.5 square-root (milder, for small training sets)."),
    ] = 0.5,
    landmarks: LandmarksOption = "auto",
    folds: Annotated[
        int,
        typer.Option(
            help="Validation folds, each holding out 1/folds of the landmarks whole "
            "(the full regime validates on the first)."
        ),
    ] = 4,
    unfreeze_from: Annotated[
        str,
        typer.Option(
            help="Full regime: freeze the backbone before this layer (e.g. layer4, blocks.5); a wrong name lists them."
        ),
    ] = "",
    pooling: Annotated[Pooling, typer.Option(help="gem, avg, max, or cls (a transformer's class token).")] = "gem",
    lr: Annotated[float, typer.Option(help="Learning rate of the head (the backbone's is lower).")] = 1e-3,
    batch_size: Annotated[
        int, typer.Option(help="Training batch, per process under torchrun (a CPU embeds in smaller batches).")
    ] = 64,
    seed: Annotated[int, typer.Option(help="Same seed, data and settings: the same run.")] = 0,
    device: DeviceOption = "",
    workers: WorkersOption = -1,
    augmented: Annotated[
        Optional[Path], typer.Option(help="Augmented folder to train on (default <data>/augmented when present).")
    ] = None,
    no_augmented: Annotated[bool, typer.Option("--no-augmented", help="Ignore <data>/augmented.")] = False,
    no_pretrained: Annotated[
        bool, typer.Option("--no-pretrained", help="Random init (for tests and research).")
    ] = False,
    weights_file: Annotated[
        Optional[Path], typer.Option(help="ImageNet weights file for the backbone (.pth, .safetensors).")
    ] = None,
    old_weights: Annotated[Optional[Path], typer.Option("--weights", hidden=True)] = None,
    config: ConfigOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="Continue an interrupted run folder exactly.")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at an unreadable training photo instead of skipping it.")] = False,
    precision: PrecisionOption = "auto",
    compile: CompileOption = False,
    freeze_bn: Annotated[
        Optional[bool],
        typer.Option(
            "--freeze-bn/--train-bn",
            show_default="auto: when a class has < 30 photos",
            help="Full regime: keep BatchNorm statistics pretrained.",
        ),
    ] = None,
    layer_decay: Annotated[
        float,
        typer.Option(help="Full regime: each earlier backbone block learns this factor slower (e.g. 0.7; 1 = off)."),
    ] = 1.0,
    l2_sp: Annotated[
        float,
        typer.Option(
            "--l2-sp", help="Full regime: penalty on the distance from the pretrained weights (e.g. 0.01; 0 = off)."
        ),
    ] = 0.0,
    wise_ft: Annotated[
        bool,
        typer.Option(
            "--wise-ft/--no-wise-ft",
            help="Full regime: interpolate pretrained and fine-tuned weights, alpha chosen on held-out classes.",
        ),
    ] = True,
    pseudo_labels: Annotated[
        bool,
        typer.Option(
            "--pseudo-labels/--no-pseudo-labels",
            help="Add classes of "
            "query/gallery photos that are confident mutual nearest neighbours "
            "(threshold set on held-out classes).",
        ),
    ] = False,
) -> None:
    """Fine-tune backbone(s); each run keeps config, metrics, curves and the best checkpoint in runs/<name>/.

    Several GPUs (or CPU processes, gloo): torchrun --nproc_per_node N -m competition.cli train --regime full ...
    (--batch-size is per process; rank 0 validates and writes the run folder).
    """
    from competition.train.config import resume_settings, training_settings
    from competition.train.loop import train as train_run

    if "old_weights" in _typed(ctx):
        _deprecated("train --weights", "--weights-file")
    flags = _typed_settings(
        ctx,
        renamed={
            "name": "run_name",
            "no_augmented": "use_augmented",
            "no_pretrained": "pretrained",
            "old_weights": "weights_file",
        },
        convert={"no_augmented": lambda value: not value, "no_pretrained": lambda value: not value},
        skip={"backbone", "config", "resume"},
    )

    def settings_for(one_backbone: str | None) -> object:
        if resume:
            return resume_settings(resume, flags)
        named = flags | ({"backbone": one_backbone} if one_backbone else {})
        if name and len(backbone or []) > 1:
            named["run_name"] = f"{name}-{one_backbone}"
        return training_settings(named, config)

    for one in (backbone or [None]) if not resume else [None]:
        settings = _run(lambda one=one: settings_for(one))
        summary = _run(lambda settings=settings: train_run(settings, resume=bool(resume), progress=_progress()))
        _print_train_summary(settings, summary)


def _plain(value):
    return str(value) if isinstance(value, Path) else value


def _report_skipped(skipped: list[str], what: str) -> None:
    if skipped:
        typer.secho(f"{len(skipped)} {what} (--strict to stop instead); first: {skipped[0]}", fg="yellow", err=True)


def _print_train_summary(settings, summary: dict) -> None:
    from competition.train.validation import describe

    if "rank" in summary:  # a torchrun worker other than rank 0: rank 0 reports
        return
    _report_skipped(summary["skipped_files"], "unreadable training photo(s) skipped")
    epochs = f", best epoch {summary['best_epoch']} of {summary['epochs_run']}" if summary.get("epochs_run") else ""
    typer.echo(
        f"run {settings.runs_dir}/{summary['run']} ({summary['regime']} regime, head {summary['head']}"
        f"{epochs}) in {summary['wall_seconds']:.0f}s; validation on held-out photos vs the pretrained backbone:"
    )
    known = summary.get("landmarks") == "known"  # closed folds: no landmark is held out whole
    for line in describe({g: v for g, v in summary["validation"].items() if not (known and g == "unseen")}):
        typer.echo(f"  {line}")
    fusion = summary.get("label_fusion") or {}
    if fusion:
        typer.echo(
            f"  with class posteriors fused (C={fusion['strength']:g}, weight {fusion['weight']:g}), on held-out "
            "photos of training landmarks (what --landmarks known ranks by):"
        )
        for line in describe(fusion["validation"]):
            typer.echo(f"  {line}")
    if known:
        return  # the unseen-landmark warnings below do not apply: every query's landmark trains
    unseen = summary["beats_pretrained"].get("unseen")
    if unseen is None:
        typer.secho(
            "  warning: too few photos to tell whether training helps landmarks it has not seen; compete "
            "submit will use the pretrained backbone for this run (--if-worse keep to override)",
            fg="yellow",
            err=True,
        )
    elif unseen is False:
        verdict = summary["validation"].get("unseen", {}).get("verdict", "")
        how = "clearly lower" if verdict == "worse" else "lower, though within the interval (no clear difference)"
        typer.secho(
            f"  warning: on held-out landmarks the run's mAP@10 was {how} than the pretrained backbone's; "
            "compete submit will use the backbone instead, the safer choice for landmarks it has not seen "
            "(--if-worse keep|ensemble to override)",
            fg="yellow",
            err=True,
        )


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CompeteError(f"--{flag} must be numbers separated by commas, not '{text}'") from None


@app.command()
def submit(
    ctx: typer.Context,
    data: DataOption = Path("data/sample"),
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            "-m",
            help="Run folder/name, or a backbone name for off-the-shelf features; repeat for an ensemble.",
            show_default="efficientnet_lite0",
        ),
    ] = None,
    ensemble_weights: Annotated[
        str, typer.Option(help="Weight of each --model in the ensemble, e.g. 1,0.5 ('' = equal).")
    ] = "",
    old_weights: Annotated[str, typer.Option("--weights", hidden=True)] = "",
    name: Annotated[
        str, typer.Option(help="Submission name (file submissions/<name>.csv; default: the models and the time).")
    ] = "",
    k: Annotated[
        int,
        typer.Option("--k", "-k", help="Gallery images per query (0: 100 for --format kaggle, its limit, else 10)."),
    ] = 0,
    map_k: Annotated[
        int,
        typer.Option(
            help="Local mAP@k next to mAP@10 (0: 100 for --format kaggle, as the "
            "Google Landmark Retrieval competitions score)."
        ),
    ] = 0,
    flip: Annotated[
        bool,
        typer.Option(
            "--flip/--no-flip",
            help="Test-time augmentation: average with the mirrored photo (measured on real photos: +2 points mAP@10).",
        ),
    ] = True,
    scales: Annotated[
        str,
        typer.Option(
            help="Test-time scales, e.g. 0.707,1,1.414: the photo is resized to each "
            "from its own pixels (at most 5, at most 1024 px)."
        ),
    ] = "1",
    image_size: Annotated[int, typer.Option(help="Override every model's view size (0: its own).")] = 0,
    resize: Annotated[
        Optional[Resize],
        typer.Option(
            help="Override every model's view: square (the whole photo squashed to size x size) or aspect "
            "(longer side to size, aspect ratio kept, photos of one shape batched together).",
            show_default="each model's own (aspect for off-the-shelf backbones)",
        ),
    ] = None,
    pooling: Annotated[
        Pooling,
        typer.Option(
            help="Pooling for off-the-shelf backbones (cls: a transformer's class token); trained runs keep their own."
        ),
    ] = "gem",
    weights_file: Annotated[
        Optional[Path],
        typer.Option(
            help="ImageNet weights file (.pth, .safetensors) for an off-the-shelf backbone whose weights are "
            "neither installed nor cached (no network); trained runs carry their own."
        ),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            help="csv (query,rank_1..rank_k), kaggle (id,images: ids "
            "without extension, space-separated, as Google Landmark "
            "Retrieval wants) or json.",
        ),
    ] = "csv",
    submissions_dir: Annotated[Path, typer.Option(help="Where submission files go.")] = Path("submissions"),
    leaderboard: Annotated[Path, typer.Option(help="Leaderboard to record the scored run in.")] = Path(
        "leaderboard.md"
    ),
    runs_dir: Annotated[Path, typer.Option(help="Where runs and embedding caches live.")] = Path("runs"),
    batch_size: Annotated[
        int, typer.Option(help="Photos per forward pass on CUDA (a CPU takes fewer, about 8 of 224 px: faster there).")
    ] = 32,
    device: DeviceOption = "",
    workers: WorkersOption = -1,
    strict: Annotated[bool, typer.Option(help="Fail on an unreadable query/gallery image instead of warning.")] = False,
    if_worse: Annotated[
        IfWorse,
        typer.Option(
            help="A run that did worse than its pretrained backbone in validation (on held-out "
            "landmarks; for --landmarks known, on held-out photos of its own), or could not tell: "
            "fallback (backbone only), ensemble (with the backbone, 1:1) or keep (which also "
            "submits a run still training as it is; the others refuse it)."
        ),
    ] = "fallback",
    with_pretrained: Annotated[
        float,
        typer.Option(
            help="Add each run's pretrained backbone to the ensemble at this weight (0 = off): guards unseen landmarks."
        ),
    ] = 0.0,
    whiten: Annotated[
        Whiten, typer.Option(help="PCA-whitening learned on the unlabeled gallery or query+gallery images.")
    ] = "off",
    whiten_dim: Annotated[int, typer.Option(help="Whitened dimensions (0 = as many as the data allow).")] = 0,
    whiten_power: Annotated[
        float,
        typer.Option(
            help="Divide each component by eigenvalue**(power/2): 1 = full "
            "whitening, 0.5 = square-root (safer on small galleries)."
        ),
    ] = 0.5,
    dba: Annotated[
        int, typer.Option(help="Database-side augmentation: gallery neighbours averaged in (0 = off; try 2).")
    ] = 0,
    qe: Annotated[
        int, typer.Option(help="α-query expansion: gallery neighbours averaged into each query (0 = off; try 2).")
    ] = 0,
    alpha: Annotated[float, typer.Option(help="Neighbour weight = similarity ** alpha, for DBA and QE.")] = 3.0,
    rerank: Annotated[bool, typer.Option(help="k-reciprocal re-ranking of the final ranking.")] = False,
    rerank_k1: Annotated[
        int,
        typer.Option(
            help="Re-ranking neighbourhood: about 1.5x the photos one landmark has in query + gallery "
            "(8 for ~6, as on realdev)."
        ),
    ] = 8,
    rerank_k2: Annotated[int, typer.Option(help="Re-ranking local expansion (about k1 / 3).")] = 3,
    verify: Annotated[
        int,
        typer.Option(
            help="Geometric verification: re-rank each query's first N gallery photos by SIFT keypoints that "
            "one homography explains (MAGSAC), added to the global score; cached, about 1.3 s a query at "
            "N=100 on 2 CPU cores; 0: off."
        ),
    ] = 0,
    landmarks: LandmarksOption = "auto",
    precision: PrecisionOption = "auto",
    compile: CompileOption = False,
    index: Annotated[
        Index,
        typer.Option(
            help="exact, ivf, ivfpq (compressed codes, for galleries too big for memory), hnsw, or auto (IVF "
            "from 100k gallery images); an "
            "approximate index reports its recall against exact."
        ),
    ] = "auto",
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Rank the gallery for every query, write the submission, score it when labels.csv exists.

    Several GPUs or processes (gloo on CPU, across nodes with torchrun's rendezvous flags):
    torchrun --nproc_per_node N -m competition.cli submit ... (each process embeds its share into the shared
    embedding store; rank 0 fuses, searches, writes and scores).
    """
    from competition.report.tables import format_scores
    from competition.retrieval.submit import SubmitConfig, submit as run_submit
    from competition.train.config import load_train_config

    if "old_weights" in _typed(ctx):
        _deprecated("submit --weights", "--ensemble-weights")

    def weights(text: str) -> list[float] | None:
        return _floats(text, "ensemble-weights") or None

    def go():
        flags = _typed_settings(  # inside _run: a malformed --scales or --ensemble-weights is one line
            ctx,
            renamed={"model": "models", "ensemble_weights": "weights", "old_weights": "weights"},
            convert={"ensemble_weights": weights, "old_weights": weights, "scales": lambda t: _floats(t, "scales")},
            skip={"config", "json_out"},
        )
        settings = SubmitConfig.from_dict((load_train_config(config) if config else {}) | flags)
        return settings, run_submit(settings, progress=_progress())

    settings, result = _run(go)
    if result.path is None:  # a torchrun rank other than 0: rank 0 reports
        return
    _report_skipped(result.skipped, "query/gallery image(s) unreadable, ranked with zero vectors")
    for note in result.notes:
        typer.secho(note, fg="cyan", err=True)
    if json_out:
        _print_json(
            {
                "submission": str(result.path),
                "scores": result.scores,
                "skipped": result.skipped,
                "record": result.record,
                "settings": settings.to_dict(),
            }
        )
        return
    typer.echo(f"submission written: {result.path}")
    if result.scores:
        typer.echo(format_scores(result.scores))
        typer.echo(f"recorded in {settings.leaderboard}")


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
            help="A Google Landmark Retrieval solution file (id,images,Usage, e.g. retrieval_solution_v2.1.csv): "
            "print the Public and Private mAP@100 as Kaggle's leaderboard computes them (--data not needed)."
        ),
    ] = None,
    record: Annotated[
        bool, typer.Option(help="Also add a row for it to --leaderboard (e.g. when submit could not write it).")
    ] = False,
    leaderboard: Annotated[Path, typer.Option(help="Leaderboard that --record writes to.")] = Path("leaderboard.md"),
    json_out: JsonOption = False,
) -> None:
    """Score a submission against <data>/labels.csv.

    Prints top-1/3/5/10, mAP@10 and precision@10 (all, seen, unseen) and the landmarks with the lowest top-1.
    """
    from competition.evaluate.scoring import score_file
    from competition.report.tables import format_scores

    if solution:
        from competition.evaluate.solution import read_solution, score_against_solution

        kaggle = _run(lambda: score_against_solution(submission, read_solution(solution)))
        if json_out:
            _print_json({"submission": str(submission), "solution": str(solution), "scores": kaggle})
            return
        for usage in ("public", "private"):
            if f"{usage}_map@100" in kaggle:
                typer.echo(
                    f"{usage.title():<8} mAP@100 {kaggle[f'{usage}_map@100']:.4f} "
                    f"({int(kaggle[f'{usage}_queries'])} queries)"
                )
        return
    scored = _run(lambda: score_file(submission, data, map_k))
    if record:
        from competition.evaluate.leaderboard import record_scored_file

        _run(lambda: record_scored_file(leaderboard, submission, scored.scores))
    if json_out:
        _print_json({"submission": str(submission), "scores": scored.scores, "per_class_top1": scored.per_class})
        return
    typer.echo(format_scores(scored.scores))
    weakest = sorted(scored.per_class.items(), key=lambda item: (item[1], item[0]))[:weakest_classes]
    if weakest:
        typer.echo(
            f"  weakest landmarks (top-1 of their queries, {len(scored.per_class)} in all): "
            + ", ".join(f"{label} {value:.2f}" for label, value in weakest)
        )


@app.command()
def validate(
    submission: Annotated[Path, typer.Argument(help="Submission file (csv, kaggle or json, as compete writes).")],
    data: DataOption = Path("data/sample"),
    k: Annotated[
        Optional[int],
        typer.Option("--k", "-k", help="Gallery names expected per query.", show_default="as many as the first row"),
    ] = None,
    fmt: Annotated[
        Optional[Format],
        typer.Option(
            "--format",
            help="The format the file must be in (e.g. kaggle: header id,images, at most 100 ids per row).",
            show_default="what its header says",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Check a submission before upload: every query once, known names only, no repeats, k per row (kaggle: <= 100)."""
    from competition.evaluate.validate import validate_against

    problems, notes = _run(lambda: validate_against(submission, data, k, fmt))
    for note in notes:
        typer.secho(f"note: {note}", fg="yellow", err=True)
    if json_out:
        _print_json({"submission": str(submission), "valid": not problems, "problems": problems})
    else:
        for problem in problems:
            typer.secho(f"invalid: {problem}", fg="red", err=True)
        if not problems:
            typer.echo(f"{submission}: valid")
    if problems:
        raise typer.Exit(1)


@app.command()
def upload(
    submission: Annotated[Path, typer.Argument(help="Submission file to send.")],
    competition: Annotated[str, typer.Option(help="Kaggle competition slug, as in its URL.")],
    message: Annotated[
        str,
        typer.Option(help="Submission description shown on Kaggle.", show_default=False, rich_help_panel="Required"),
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
        Optional[int], typer.Option(help="Code competitions: the notebook version.", show_default="its latest")
    ] = None,
) -> None:
    """Validate a submission, send it to Kaggle, record the upload in the leaderboard.

    Uses the official kaggle client (the optional kaggle extra) and its credentials (KAGGLE_API_TOKEN,
    ~/.kaggle/access_token, KAGGLE_USERNAME + KAGGLE_KEY or kaggle.json); time, message and file hash go
    beside the submission's leaderboard row.
    """
    from competition.evaluate.upload import upload_submission

    if old_message:  # -m means --model in submit; one meaning across commands
        _deprecated("upload -m", "--message")
        message = message or old_message
    if not message:
        typer.secho("error: --message is required (the description Kaggle shows)", fg="red", err=True)
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
            say=lambda t: typer.echo(t, err=True),
        )
    )
    typer.echo(f"uploaded {submission} to {competition} (sha256 {done['sha256'][:12]}), recorded in {leaderboard}")


@app.command()
def report(
    submission: Annotated[Path, typer.Argument(help="A scored submission file written by compete submit.")],
    data: DataOption = Path("data/sample"),
    out: Annotated[
        Optional[Path],
        typer.Option(help="Folder for index.html and the PNGs.", show_default="submissions/reports/<name>"),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where compete submit kept the submission's embeddings.")] = Path(
        "runs"
    ),
    queries: Annotated[int, typer.Option(help="Queries shown with their results (failures first).")] = 16,
) -> None:
    """Write an HTML report of a submission, with PNGs.

    Queries beside their top-k (green right, red wrong), per-landmark accuracy, the confusion matrix and a
    t-SNE map of the gallery embeddings.
    """
    from competition.report.page import write_report

    folder = out or Path("submissions") / "reports" / submission.stem
    page = _run(lambda: write_report(submission, data, folder, runs_dir, queries))
    typer.echo(f"report written: {page}")


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
            typer.secho("error: --diff takes exactly two names", fg="red", err=True)
            raise typer.Exit(1)
        first, second = (_run(lambda name=name: describe_entry(name, path, runs_dir)) for name in diff)
        differences = diff_configs(first, second)
        if json_out:
            _print_json({"entries": diff, "differences": differences})
        else:
            typer.echo("\n".join(differences) or "no differences")
        return
    if json_out:  # no leaderboard yet is no rows, not an error
        _print_json({"leaderboard": str(path), "rows": _run(lambda: read_records(path)) if path.exists() else []})
    elif not path.exists():
        typer.secho(f"{path}: no leaderboard yet, no rows (compete submit writes it)", err=True)
    else:
        typer.echo(path.read_text(encoding="utf-8"))


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
        typer.Option(help="Also submit the ensemble of the N best runs.", show_default="the file's ensemble_top"),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            "-d",
            help="Run the sweep on this competition folder instead of the file's; its results go to "
            "runs/sweeps/<name>-<folder name>.",
            show_default="the file's data",
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
    report = _run(lambda: run_sweep(plan, max_minutes, ensemble_top, dry_run, progress=_progress(), echo=typer.echo))
    if dry_run:
        return
    typer.echo(f"\n{report.table}\n\nresults: {report.out_dir / 'results.md'}, {report.out_dir / 'results.png'}")
    if report.outcomes and all(o["status"] != "done" for o in report.outcomes):
        typer.secho("error: every row of the sweep failed (reasons in the table)", fg="red", err=True)
        raise typer.Exit(1)


@app.command()
def models(json_out: JsonOption = False) -> None:
    """List the registered backbones, their embedding size, and whether weights are available here."""
    from competition.models.registry import REGISTRY
    from competition.models.weights import weights_available
    from competition.retrieval.search import faiss_build

    rows = [{"backbone": s.name, "dim": s.feature_dim, "weights": weights_available(s)} for s in REGISTRY.values()]
    if json_out:
        _print_json({"backbones": rows, "search": faiss_build()})
        return
    typer.echo(f"{'backbone':<20} {'dim':>5}  weights here")
    for row in rows:
        typer.echo(f"{row['backbone']:<20} {row['dim']:>5}  {row['weights']}")
    typer.echo(
        "and any timm model name (weights from the timm cache or --weights-file FILE), or "
        "open_clip:<architecture>/<tag> with open_clip_torch installed"
    )
    typer.echo(f"search: {faiss_build()}")


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where the sample competition goes.")] = Path("data/sample"),
    target: Annotated[int, typer.Option(help="Images per class after augmentation.")] = 40,
    epochs: Annotated[int, typer.Option()] = 30,
) -> None:
    """The whole path on the embedded set: sample data, augment, train, submit, leaderboard."""
    from competition.pipeline import run_demo

    started = time.time()
    report = _run(lambda: run_demo(root, target=target, epochs=epochs, progress=_progress(), echo=typer.echo))
    typer.echo(f"\ndemo finished in {time.time() - started:.0f}s")
    typer.echo(report)


if __name__ == "__main__":
    app()
