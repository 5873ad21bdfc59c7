"""Write an augmented copy of train/: balanced per class, reproducible, parallel, resumable.

Everything random about an output image (which steps fire, their parameters) follows
from (seed, source photo, variant number), so the same command gives the same files
whatever the number of workers, and a re-run only fills in what is missing. Sources are
only read. Each file is written to a temporary name and renamed, so an interrupted run
leaves whole files or none.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import shutil
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from competition.augment.recipes import Recipe
from competition.augment.transforms import build_transform
from competition.data.checks import require_every_class, unreadable_reason
from competition.data.discover import ImageRecord, training_photos
from competition.data.features import is_features_folder
from competition.data.images import UnreadableImage, read_image
from competition.errors import CompeteError, DiskFull
from competition.io import atomic_path, atomic_write_json, atomic_write_text, counted, exclusive_use, foreign_files
from competition.progress import steps

log = logging.getLogger(__name__)
AUGMENTED_DIR = "augmented"
MANIFEST = "manifest.csv"
RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    label: str
    seed: int
    steps: tuple[int, ...]  # indices into recipe.steps, in recipe order


def variants_per_source(num_sources: int, target: int) -> list[int]:
    """Spread (target - originals) variants over the sources as evenly as possible."""
    wanted = max(target - num_sources, 0)
    base, extra = divmod(wanted, num_sources)
    return [base + (1 if i < extra else 0) for i in range(num_sources)]


def choose_steps(recipe: Recipe, rng: np.random.Generator) -> tuple[int, ...]:
    probabilities = np.array([s.p for s in recipe.steps])
    fired = np.flatnonzero(rng.random(len(probabilities)) < probabilities)
    if len(fired) > recipe.max_per_image:
        fired = np.sort(rng.choice(fired, recipe.max_per_image, replace=False))
    if len(fired) == 0:
        fired = np.array([rng.choice(len(probabilities), p=probabilities / probabilities.sum())])
    return tuple(int(i) for i in fired)


MAX_NAME_BYTES = 255  # a file name's limit on ext4, XFS, APFS, NTFS
VARIANT_SUFFIX_BYTES = len("__00000.webp")  # up to 99,999 variants of one source


def fitting_base(base: str) -> str:
    """A variant's base name that leaves room for its suffix: a long source name is cut (at a
    character, not a byte) and made unique again by a hash of the whole name."""
    if len(base.encode("utf-8")) + VARIANT_SUFFIX_BYTES <= MAX_NAME_BYTES:
        return base
    tag = f"~{zlib.crc32(base.encode('utf-8')):08x}"
    room = MAX_NAME_BYTES - VARIANT_SUFFIX_BYTES - len(tag)
    cut = base.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return cut + tag


def plan_jobs(records: list[ImageRecord], recipe: Recipe, out_dir: Path, seed: int) -> list[Job]:
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    jobs = []
    for label in sorted(by_class):
        sources = sorted(by_class[label], key=lambda r: r.name)  # input order must not matter
        stems = Counter(PurePosixPath(r.name).stem for r in sources)
        for record, count in zip(sources, variants_per_source(len(sources), recipe.target_per_class)):
            source_hash = zlib.crc32(record.name.encode("utf-8"))
            # named as in the class folder (a link keeps its own name); a.jpg and a.png must not
            # write the same variant files
            name = PurePosixPath(record.name)
            base = fitting_base(name.stem if stems[name.stem] == 1 else name.name.replace(".", "-"))
            for variant in range(count):
                rng = np.random.default_rng([seed, source_hash, variant])
                output = out_dir / label / f"{base}__{variant:03d}.{recipe.output_format}"
                jobs.append(Job(record.path, output, label, int(rng.integers(2**31 - 1)), choose_steps(recipe, rng)))
    return jobs


def fit_longest_side(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale >= 1:
        return image
    return cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )


def encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    params = {"jpg": [cv2.IMWRITE_JPEG_QUALITY, quality], "webp": [cv2.IMWRITE_WEBP_QUALITY, quality]}.get(fmt, [])
    ok, buffer = cv2.imencode(f".{fmt}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode .{fmt}")
    return buffer.tobytes()


def resolved_steps(recipe: Recipe) -> list:
    """Build each step once; a crop without an explicit size crops to the output size."""
    transforms = []
    for step in recipe.steps:
        params = dict(step.params)
        if step.name == "random_crop":
            params.setdefault("size", recipe.output_size)
        transforms.append(build_transform(step.name, params, p=1.0))
    return transforms


def augment_image(image: np.ndarray, transforms: list, job_steps: tuple[int, ...], seed: int) -> np.ndarray:
    for order, index in enumerate(job_steps):
        transform = transforms[index]
        transform.set_random_seed(seed + order)
        image = transform(image=image)["image"]
    return image


# --- worker processes -------------------------------------------------------------------

_worker_state: dict = {}
DISK_FULL = "disk full"  # what a job returns when its variant could not be written for want of space


def _init_worker(recipe_dict: dict) -> None:
    cv2.setNumThreads(1)  # one process per core already
    _load_recipe(recipe_dict)


def _load_recipe(recipe_dict: dict) -> None:
    recipe = Recipe.from_dict(recipe_dict)
    _worker_state.update(recipe=recipe, transforms=resolved_steps(recipe))


def _run_job(job: Job) -> str | None:
    recipe: Recipe = _worker_state["recipe"]
    try:
        image = fit_longest_side(read_image(job.source), recipe.output_size)
        image = fit_longest_side(
            augment_image(image, _worker_state["transforms"], job.steps, job.seed), recipe.output_size
        )
        data = encode(image, recipe.output_format, recipe.quality)
        with atomic_path(job.output) as tmp:
            tmp.write_bytes(data)
    except UnreadableImage as error:
        return str(error)
    except DiskFull:
        return DISK_FULL  # not the source photo's fault: the run stops (see _augment)
    except Exception as error:  # a transform failing on an odd image must not stop the run
        return f"{job.source}: {type(error).__name__}: {error}"
    return None


class _InThisProcess:
    """--workers 1: this process makes the variants, as a pool of one would, without spawning a
    worker that spends seconds importing (most of a small run) and re-imports the calling script."""

    def __init__(self, recipe: Recipe):
        _load_recipe(recipe.to_dict())

    def map(self, function, items, chunksize: int = 1):
        return map(function, items)  # lazy: a full disk or Ctrl-C stops it at the next variant

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _pool(workers: int, recipe: Recipe) -> ProcessPoolExecutor | _InThisProcess:
    if workers == 1:
        return _InThisProcess(recipe)
    # spawn, not fork: forking a process whose torch/OpenMP thread pools are running can
    # deadlock the children (seen here when augment runs after torch was imported). An
    # executor, not multiprocessing.Pool: a worker that dies breaks the executor at once,
    # where a Pool silently starts another (forever, when every new one dies the same way).
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(recipe.to_dict(),))


WORKER_DIED = (
    "an augment worker process died before finishing. From a script, call compete's API under "
    '`if __name__ == "__main__":` (each worker process re-imports the script that started it). Variants '
    "written so far are kept: the same command resumes"
)


# --- the entry point --------------------------------------------------------------------


@dataclass
class AugmentResult:
    out_dir: Path
    written: int
    skipped_existing: int
    failed: list[str]
    per_class: dict[str, int]


def check_out_dir(out_dir: Path, root: Path) -> None:
    """The output folder may neither hold the source photos nor sit among them."""
    out, sources = out_dir.resolve(), (root / "train").resolve()
    if out == sources or out in sources.parents:
        raise CompeteError(
            f"--out {out_dir} holds the training photos ({sources}): choose a folder of its own, "
            f"e.g. {root / AUGMENTED_DIR}"
        )
    if sources in out.parents:
        raise CompeteError(f"--out {out_dir} is inside {sources}: its variants would be read as training classes")


def recorded_recipe(folder: Path) -> dict | None:
    """The recipe an augmented folder was made with, as recorded (None: not made by compete augment)."""
    recorded = folder / RECIPE_FILE
    return json.loads(recorded.read_text())["recipe"] if recorded.is_file() else None


def made_by_compete(folder: Path) -> bool:
    return (folder / RECIPE_FILE).is_file() or (folder / MANIFEST).is_file()


def _prepare_out_dir(out_dir: Path, recipe: Recipe, seed: int, overwrite: bool, replace_if_changed: bool) -> None:
    recorded = out_dir / RECIPE_FILE
    wanted = {"recipe": recipe.to_dict(), "seed": seed}
    changed = recorded.exists() and json.loads(recorded.read_text()) != wanted
    if out_dir.exists() and foreign_files(out_dir) and not made_by_compete(out_dir):  # never into a user's folder
        raise CompeteError(
            f"{out_dir} holds files and was not made by compete augment (no {RECIPE_FILE}): not replaced; "
            "choose another --out"
        )
    if out_dir.exists() and (overwrite or (changed and replace_if_changed)):
        shutil.rmtree(out_dir)  # checked above: compete made it
    elif changed:
        raise CompeteError(
            f"{out_dir} was made with another recipe or seed: pass --overwrite to regenerate it, "
            "or --out for a separate folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.rglob(".*.tmp"):  # from a process killed mid-write
        leftover.unlink(missing_ok=True)
    atomic_write_json(recorded, wanted)


def write_manifest(out_dir: Path, jobs: list[Job], recipe: Recipe, root: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # quotes commas and quotes in class names
    writer.writerow(["output", "source", "class", "transforms", "seed"])
    for job in jobs:
        if job.output.exists():
            names = ";".join(recipe.steps[i].name for i in job.steps)
            source = Path(os.path.relpath(job.source, root)).as_posix()
            writer.writerow([job.output.relative_to(out_dir).as_posix(), source, job.label, names, job.seed])
    atomic_write_text(out_dir / MANIFEST, buffer.getvalue())


def augment_competition(
    root: str | Path,
    recipe: Recipe,
    out_dir: str | Path | None = None,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
    replace_if_changed: bool = False,
) -> AugmentResult:
    """Grow <root>/train into <root>/augmented (or `out_dir`) following `recipe`."""
    root = Path(root)
    if is_features_folder(root):
        raise CompeteError(f"{root} holds features computed elsewhere, not photos: there is nothing to augment")
    records = training_photos(root)
    # resolved once: `link/../x` means one folder to the OS and another to a lexical parent
    out_dir = (Path(out_dir) if out_dir else root / AUGMENTED_DIR).resolve()
    check_out_dir(out_dir, root)
    if workers is not None and workers < 0:
        raise CompeteError(f"--workers must be 0 (all cores) or more, not {workers}")
    workers = workers or os.cpu_count() or 1
    with exclusive_use(out_dir, "augmented folder"):
        return _augment(root, records, recipe, out_dir, seed, workers, overwrite, strict, progress, replace_if_changed)


def _augment(
    root: Path,
    records: list[ImageRecord],
    recipe: Recipe,
    out_dir: Path,
    seed: int,
    workers: int,
    overwrite: bool,
    strict: bool,
    progress: bool,
    replace_if_changed: bool,
) -> AugmentResult:
    _prepare_out_dir(out_dir, recipe, seed, overwrite, replace_if_changed)
    pool = _pool(workers, recipe)
    try:
        problems = list(
            steps(
                pool.map(unreadable_reason, [r.path for r in records], chunksize=8),
                "checking sources",
                total=len(records),
                enabled=progress,
            )
        )
        unreadable = [p for p in problems if p]
        if unreadable and strict:
            raise CompeteError(f"{counted(len(unreadable), 'unreadable source image')}, e.g. {unreadable[0]}")
        readable = [r for r, p in zip(records, problems) if p is None]
        require_every_class(records, readable)
        jobs = plan_jobs(readable, recipe, out_dir, seed)
        todo = [j for j in jobs if not (j.output.exists() and j.output.stat().st_size > 0)]
        errors, disk_full = [], False
        results = pool.map(_run_job, todo, chunksize=4)
        for error in steps(results, "augmenting", total=len(todo), unit="img", enabled=progress):
            if error == DISK_FULL:  # every later variant would fail the same way: stop the workers now
                disk_full = True
                break
            if error:
                errors.append(error)
    except BrokenProcessPool as error:
        raise CompeteError(WORKER_DIED) from error
    finally:  # on an error, a full disk or Ctrl-C, queued variants are dropped rather than waited for
        pool.shutdown(wait=True, cancel_futures=True)
    if disk_full:  # counted once the workers have stopped: what is on disk now
        written = sum(job.output.exists() for job in todo)
        raise DiskFull(
            f"disk full: cannot write to {out_dir} ({written} variants written by this run, "
            f"{len(jobs) - len(todo)} before it); free some space and re-run the same command: it resumes"
        )
    for message in unreadable + errors:
        log.warning("skipped: %s", message)
    write_manifest(out_dir, jobs, recipe, root)
    per_class: dict[str, int] = defaultdict(int)
    for job in jobs:
        per_class[job.label] += int(job.output.exists())
    return AugmentResult(out_dir, len(todo) - len(errors), len(jobs) - len(todo), unreadable + errors, dict(per_class))
