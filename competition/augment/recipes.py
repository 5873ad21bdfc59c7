"""Recipes: which transforms, how likely, how many chained, how many images per class.

A recipe is plain data (YAML or JSON) so a user can read, copy and tune one; presets
cover the common cases. Each step fires independently with its probability `p`; at most
`max_per_image` fire on one output image (a random subset, kept in recipe order), and
when none fires one step is drawn by weight `p`, so every output differs from its source.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from competition.augment.transforms import TRANSFORMS
from competition.errors import CompeteError
from competition.io import atomic_write_text, check_replaceable, mark_written
from competition.settings.files import read_settings_file


@dataclass
class Step:
    name: str
    p: float = 0.5
    params: dict = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    steps: list[Step]
    max_per_image: int = 3
    target_per_class: int = 300  # originals included
    output_size: int = 384  # longest side of written images, pixels
    output_format: str = "jpg"
    quality: int = 92

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        try:
            steps = [Step(**s) if isinstance(s, dict) else Step(name=str(s)) for s in data.get("steps", [])]
            recipe = cls(**{**data, "steps": steps})
        except TypeError as error:
            raise CompeteError(f"recipe: {error}") from error
        validate(recipe)
        return recipe


def validate(recipe: Recipe) -> None:
    unknown = [s.name for s in recipe.steps if s.name not in TRANSFORMS]
    if unknown:
        raise CompeteError(f"recipe '{recipe.name}': unknown transform(s) {unknown}; see `compete augment --list`")
    if not recipe.steps:
        raise CompeteError(f"recipe '{recipe.name}': no steps")
    bad_p = [s.name for s in recipe.steps if not 0.0 <= s.p <= 1.0]
    if bad_p or sum(s.p for s in recipe.steps) <= 0:
        raise CompeteError(f"recipe '{recipe.name}': each p must be in [0, 1] and some p > 0 ({bad_p})")
    if recipe.max_per_image < 1 or recipe.target_per_class < 1 or recipe.output_size < 16:
        raise CompeteError(f"recipe '{recipe.name}': max_per_image, target_per_class >= 1 and output_size >= 16")
    if recipe.output_format not in ("jpg", "png", "webp"):
        raise CompeteError(f"recipe '{recipe.name}': output_format must be jpg, png or webp")


def _steps(*pairs: tuple[str, float], **params: dict) -> list[Step]:
    return [Step(name, p, dict(params.get(name, {}))) for name, p in pairs]


PRESETS: dict[str, Recipe] = {
    "light": Recipe(
        "light",
        _steps(
            ("random_crop", 0.5),
            ("hflip", 0.5),
            ("brightness_contrast", 0.5),
            ("hue", 0.2),
            ("gaussian_blur", 0.2),
            ("jpeg", 0.2),
            random_crop={"scale": (0.7, 1.0)},
        ),
        max_per_image=2,
    ),
    "default": Recipe(
        "default",
        _steps(
            ("random_crop", 0.5),
            ("hflip", 0.5),
            ("perspective", 0.3),
            ("rotate", 0.2),
            ("affine", 0.2),
            ("brightness_contrast", 0.5),
            ("gamma", 0.3),
            ("saturation", 0.3),
            ("hue", 0.2),
            ("clahe", 0.2),
            ("grayscale", 0.1),
            ("gauss_noise", 0.2),
            ("iso_noise", 0.2),
            ("gaussian_blur", 0.2),
            ("motion_blur", 0.1),
            ("coarse_dropout", 0.2),
            ("shadow", 0.1),
            ("fog", 0.1),
        ),
        max_per_image=3,
    ),
    # Strong light/season/weather changes: simulates night (dark gamma), haze, snow, rain.
    "heavy": Recipe(
        "heavy",
        _steps(
            ("random_crop", 0.6),
            ("hflip", 0.5),
            ("perspective", 0.4),
            ("affine", 0.3),
            ("pad", 0.1),
            ("brightness_contrast", 0.6),
            ("gamma", 0.4),
            ("color_jitter", 0.4),
            ("grayscale", 0.1),
            ("clahe", 0.2),
            ("gauss_noise", 0.3),
            ("iso_noise", 0.2),
            ("motion_blur", 0.2),
            ("gaussian_blur", 0.2),
            ("jpeg", 0.3),
            ("coarse_dropout", 0.3),
            ("random_erasing", 0.2),
            ("shadow", 0.2),
            ("fog", 0.2),
            ("rain", 0.1),
            ("snow", 0.1),
            ("sun_flare", 0.1),
            random_crop={"scale": (0.35, 1.0)},
            gamma={"gamma_limit": (40, 200)},
        ),
        max_per_image=4,
    ),
    # The classic competition list: one transform per output image, noise + blurs +
    # morphology + colour + geometry + edges.
    "classic": Recipe(
        "classic",
        _steps(
            ("gauss_noise", 1),
            ("salt_pepper", 1),
            ("speckle_noise", 1),
            ("box_blur", 1),
            ("median_blur", 1),
            ("gaussian_blur", 1),
            ("bilateral_blur", 1),
            ("erosion", 1),
            ("dilation", 1),
            ("opening", 1),
            ("closing", 1),
            ("morph_gradient", 1),
            ("tophat", 1),
            ("blackhat", 1),
            ("saturation", 1),
            ("brightness_contrast", 1),
            ("gamma", 1),
            ("hue", 1),
            ("sharpen", 1),
            ("hflip", 1),
            ("random_crop", 1),
            ("rotate", 1),
            ("scale", 1),
            ("pad", 1),
            ("sobel", 1),
            ("canny", 1),
            ("superpixels", 1),
        ),
        max_per_image=1,
    ),
}


def load_recipe(name_or_path: str, **overrides) -> Recipe:
    """A preset by name or a recipe file (.yaml/.yml/.json); overrides replace top-level fields."""
    path = Path(name_or_path)
    if name_or_path in PRESETS:
        data = PRESETS[name_or_path].to_dict()
    elif path.suffix.lower() in (".yaml", ".yml", ".json"):
        data = read_settings_file(path, "recipe file")
        data.setdefault("name", path.stem)
    else:
        raise CompeteError(f"unknown recipe '{name_or_path}': a preset ({', '.join(PRESETS)}) or a .yaml/.json file")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Recipe.from_dict(json.loads(json.dumps(data)))  # tuples -> lists, as a file would have them


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    path = Path(path)
    data = recipe.to_dict()
    text = json.dumps(data, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    check_replaceable(path, "recipe file", "name a new file")
    atomic_write_text(path, text)
    mark_written(path)
