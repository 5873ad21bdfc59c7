"""A picture of a recipe: each step applied alone to a few training photos, then chained.

One row per recipe step (original beside its augmentation, for a few photos of different
classes), and last a few rows of full recipe outputs as `compete augment` would write them,
so a user sees what each transform does before generating thousands of files. The
images come from the same code path as generation (`resolved_steps`, `augment_image`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from competition.augment.generate import augment_image, choose_steps, fit_longest_side, resolved_steps
from competition.augment.recipes import Recipe, Step
from competition.data.discover import ImageRecord, training_photos
from competition.data.images import UnreadableImage, read_image
from competition.errors import CompeteError
from competition.io import PNG_SIGNATURE, may_replace
from competition.report.sheets import Tile, render_sheet, save_png


def pick_sources(records: list[ImageRecord], count: int) -> list[tuple[ImageRecord, np.ndarray]]:
    """The first readable photo of `count` classes spread evenly over the sorted class list."""
    by_class: dict[str, list[ImageRecord]] = {}
    for record in sorted(records, key=lambda r: (r.label, r.name)):
        by_class.setdefault(record.label, []).append(record)
    labels = sorted(by_class)
    chosen = [labels[int(i)] for i in np.linspace(0, len(labels) - 1, min(count, len(labels)))]
    picked = []
    for label in dict.fromkeys(chosen):
        for record in by_class[label]:
            try:
                picked.append((record, read_image(record.path)))
                break
            except UnreadableImage:
                continue
    if not picked:
        raise CompeteError("no readable training photo to preview")
    return picked


def step_label(step: Step) -> str:
    params = ", ".join(f"{k}={v}" for k, v in step.params.items())
    return f"{step.name}  p={step.p:g}" + (f"\n{params}" if params else "")


def preview_recipe(
    root: str | Path,
    recipe: Recipe,
    out_path: str | Path,
    photos: int = 3,
    chained_rows: int = 2,
    seed: int = 0,
    tile: int = 150,
) -> Path:
    """Write a PNG contact sheet of `recipe` on `photos` training photos; returns its path."""
    if not may_replace(out_path, PNG_SIGNATURE):
        raise CompeteError(f"--preview {out_path} exists and is not a PNG: not overwritten; name a .png file")
    sources = pick_sources(training_photos(root), photos)
    images = [fit_longest_side(image, recipe.output_size) for _, image in sources]
    transforms = resolved_steps(recipe)
    rows = []
    for index, step in enumerate(recipe.steps):
        cells = []
        for column, ((record, _), image) in enumerate(zip(sources, images)):
            augmented = augment_image(image, transforms, (index,), seed + 1000 * index + column)
            cells += [Tile(image, record.label), Tile(augmented, step.name)]
        rows.append((step_label(step), cells))
    rng = np.random.default_rng(seed)
    for chained in range(chained_rows):
        cells = []
        for image in images:
            steps = choose_steps(recipe, rng)
            augmented = augment_image(image, transforms, steps, int(rng.integers(2**31 - 1)))
            cells += [Tile(image, "original"), Tile(augmented, "+".join(recipe.steps[i].name for i in steps))]
        rows.append((f"whole recipe #{chained + 1}\n(up to {recipe.max_per_image} steps)", cells))
    return save_png(render_sheet(rows, tile, pair_gap=True), out_path)
