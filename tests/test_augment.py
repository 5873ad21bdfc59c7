import json

import cv2
import numpy as np
import pytest
from PIL import Image

from competition.augment.generate import (
    augment_competition,
    augment_image,
    choose_steps,
    plan_jobs,
    resolved_steps,
    variants_per_source,
)
from competition.augment.recipes import PRESETS, Recipe, Step, load_recipe, save_recipe
from competition.augment.transforms import TRANSFORMS, build_transform
from competition.data.discover import discover_train
from competition.errors import CompeteError


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (0, 0), 2)
    cv2.rectangle(image, (20, 10), (40, 40), (250, 240, 200), -1)
    return image


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transform_returns_a_valid_changed_image(name, photo):
    transform = build_transform(name, p=1.0)
    transform.set_random_seed(1)
    out = transform(image=photo.copy())["image"]
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) > 0
    assert out.shape != photo.shape or not np.array_equal(out, photo), f"{name} left the image unchanged"


def test_unknown_transform_is_refused():
    with pytest.raises(CompeteError, match="unknown transform"):
        Recipe.from_dict({"name": "bad", "steps": [{"name": "sepia_dream"}]})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_recipe_file_round_trip(tmp_path, suffix):
    recipe = Recipe(
        "mine",
        [Step("gamma", 0.3, {"gamma_limit": [50, 150]}), Step("hflip", 1.0)],
        max_per_image=2,
        target_per_class=25,
        output_size=128,
    )
    save_recipe(recipe, tmp_path / f"mine{suffix}")
    assert load_recipe(str(tmp_path / f"mine{suffix}")) == recipe
    assert load_recipe(str(tmp_path / f"mine{suffix}"), target_per_class=7).target_per_class == 7


def test_presets_are_valid_and_classic_covers_the_competition_list():
    for name in PRESETS:
        assert load_recipe(name).name == name
    classic = {s.name for s in PRESETS["classic"].steps}
    assert {"gauss_noise", "median_blur", "blackhat", "tophat", "sobel", "canny", "superpixels", "pad"} <= classic


def test_balanced_variants_favour_small_classes():
    assert variants_per_source(3, 10) == [3, 2, 2]
    assert variants_per_source(10, 10) == [0] * 10
    assert sum(variants_per_source(7, 300)) == 293


def test_step_choice_respects_cap_and_never_empty():
    recipe = load_recipe("heavy")
    for seed in range(50):
        steps = choose_steps(recipe, np.random.default_rng(seed))
        assert 1 <= len(steps) <= recipe.max_per_image and list(steps) == sorted(steps)


def test_same_seed_same_pixels(photo):
    recipe = load_recipe("heavy")
    transforms = resolved_steps(recipe)
    a = augment_image(photo.copy(), transforms, (0, 5, 9), seed=11)
    b = augment_image(photo.copy(), resolved_steps(recipe), (0, 5, 9), seed=11)
    c = augment_image(photo.copy(), transforms, (0, 5, 9), seed=12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _fingerprint(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def test_generation_balanced_reproducible_resumable(tiny_competition, tmp_path):
    sources_before = _fingerprint(tiny_competition / "train")
    recipe = load_recipe("default", target_per_class=7, output_size=64)
    result = augment_competition(tiny_competition, recipe, seed=1, workers=2, progress=False)
    assert result.per_class == {c: 3 for c in result.per_class} and len(result.per_class) == 4
    assert result.written == 12 and not result.failed
    assert _fingerprint(tiny_competition / "train") == sources_before  # sources untouched
    manifest = (result.out_dir / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "output,source,class,transforms,seed" and len(manifest) == 13
    assert json.loads((result.out_dir / "recipe.json").read_text())["seed"] == 1
    first = _fingerprint(result.out_dir)

    # Interrupted run: some outputs missing, a temp file left behind -> resume fills only the gap.
    victims = sorted(result.out_dir.rglob("*.jpg"))[:4]
    for path in victims:
        path.unlink()
    (result.out_dir / victims[0].parent.name / ".half.jpg.tmp").write_bytes(b"partial")
    resumed = augment_competition(tiny_competition, recipe, seed=1, workers=1, progress=False)
    assert (resumed.written, resumed.skipped_existing) == (4, 8)
    assert _fingerprint(result.out_dir) == first  # same bytes with another worker count
    assert not list(result.out_dir.rglob("*.tmp"))

    with pytest.raises(CompeteError, match="another recipe"):
        augment_competition(tiny_competition, load_recipe("light", target_per_class=7), seed=1, progress=False)
    again = augment_competition(tiny_competition, recipe, seed=2, overwrite=True, workers=1, progress=False)
    assert again.written == 12 and _fingerprint(result.out_dir) != first


def test_a_script_without_the_main_guard_fails_in_one_line_instead_of_respawning_workers(tiny_competition, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "no_guard.py"  # what a user saves from docs/api.md without the guard
    script.write_text(
        "from competition.augment.generate import augment_competition\n"
        "from competition.augment.recipes import load_recipe\n"
        f"augment_competition({str(tiny_competition)!r}, load_recipe('light', target_per_class=6, output_size=64), "
        "workers=2, progress=False)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "augment worker process died" in done.stderr and '__name__ == "__main__"' in done.stderr
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        "if __name__ == '__main__':\n" + "".join(f"    {line}\n" for line in script.read_text().splitlines())
    )
    done = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tiny_competition / "augmented").rglob("*.jpg"))) == 8  # 4 classes x (6 - 4 photos)


def test_unreadable_sources_are_skipped_or_fatal(tiny_competition):
    bad = tiny_competition / "train" / discover_train(tiny_competition / "train")[0].label / "broken.jpg"
    bad.write_bytes(b"not an image")
    recipe = load_recipe("light", target_per_class=6, output_size=64)
    result = augment_competition(tiny_competition, recipe, workers=1, progress=False)
    assert any("broken.jpg" in message for message in result.failed)
    with pytest.raises(CompeteError, match="unreadable"):
        augment_competition(tiny_competition, recipe, workers=1, overwrite=True, strict=True, progress=False)


def test_class_with_no_readable_image_is_named(tiny_competition):
    (tiny_competition / "train" / "ghost").mkdir()
    (tiny_competition / "train" / "ghost" / "x.jpg").write_bytes(b"")
    with pytest.raises(CompeteError, match="ghost"):
        augment_competition(tiny_competition, load_recipe("light", target_per_class=6), workers=1, progress=False)


def test_plan_is_independent_of_class_order(tiny_competition, tmp_path):
    records = discover_train(tiny_competition / "train")
    recipe = load_recipe("default", target_per_class=6)
    forward = plan_jobs(records, recipe, tmp_path, seed=0)
    backward = plan_jobs(list(reversed(records)), recipe, tmp_path, seed=0)
    assert sorted(forward, key=lambda j: j.output) == sorted(backward, key=lambda j: j.output)


def test_preview_has_a_row_per_step_and_shows_changed_pixels(tiny_competition, tmp_path):
    from competition.augment.preview import preview_recipe
    from competition.report.sheets import GAP, LABEL_WIDTH

    recipe = Recipe("two", [Step("hflip", 1.0), Step("grayscale", 0.5)], output_size=64)
    sources = list((tiny_competition / "train").rglob("*.jpg"))
    before = {p: p.read_bytes() for p in sources}
    path = preview_recipe(tiny_competition, recipe, tmp_path / "sheet.png", photos=2, chained_rows=1, tile=40)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape[0] == 3 * (40 + GAP) + GAP  # 2 steps + 1 whole-recipe row
    assert sheet.shape[1] == LABEL_WIDTH + 4 * (40 + GAP) + 2 * GAP  # 2 photos x (original, augmented)
    original = sheet[GAP : GAP + 40, LABEL_WIDTH : LABEL_WIDTH + 40]
    flipped = sheet[GAP : GAP + 40, LABEL_WIDTH + 40 + GAP : LABEL_WIDTH + 80 + GAP]
    gray = sheet[2 * GAP + 40 : 2 * GAP + 80, LABEL_WIDTH + 40 + GAP : LABEL_WIDTH + 80 + GAP].astype(int)
    assert np.abs(original[:25].astype(int) - flipped[:25, ::-1].astype(int)).mean() < 3  # caption strip aside
    assert np.abs(gray[:25, :, 0] - gray[:25, :, 2]).max() <= 2 and not np.array_equal(original, flipped)
    assert all(p.read_bytes() == data for p, data in before.items())  # sources untouched
    assert not (tiny_competition / "augmented").exists()  # a preview generates nothing


def test_cli_preview_writes_png_and_exits(tiny_competition, tmp_path):
    from typer.testing import CliRunner

    from competition.cli import app

    out = tmp_path / "preview.png"
    result = CliRunner().invoke(
        app, ["augment", "--data", str(tiny_competition), "--recipe", "classic", "--preview", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[1] > 27 * 100 and "27 steps" in result.output


def test_preview_never_writes_over_a_file_that_is_not_a_png(tiny_competition, tmp_path):
    from competition.augment.preview import preview_recipe
    from competition.augment.recipes import load_recipe
    from competition.errors import CompeteError

    notes = tmp_path / "notes.md"
    notes.write_text("keep me\n")
    with pytest.raises(CompeteError, match="not a PNG: not overwritten"):
        preview_recipe(tiny_competition, load_recipe("light"), notes, photos=1, chained_rows=1, tile=20)
    assert notes.read_text() == "keep me\n"
