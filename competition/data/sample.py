"""The embedded landmark set: procedurally drawn landmarks photographed from many views.

No download needed, identical on every machine for a given seed. Each class is a landmark
(tower, dome, bridge, pagoda, ...) with its own silhouette, proportions, facade pattern and
materials; each photo is a new viewpoint (perspective, scale, crop), time of day (day, dusk,
night with lit windows), season, weather, occlusion and camera blur/noise. Half the classes
appear in train/, the other half only in query/gallery, so scores can be split into seen and
unseen landmarks as in a real competition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from competition.data.sample_landmarks import CANVAS, Canvas, draw_landmark, jitter, landmark_spec
from competition.errors import CompeteError
from competition.io import atomic_path, atomic_write_json, atomic_write_text, foreign_files
from competition.progress import steps

# --- the camera -------------------------------------------------------------------------


def _sky(rng: np.random.Generator, size: int, time_of_day: str, season: str) -> np.ndarray:
    top, bottom = {
        "day": ((0.30, 0.55, 0.90), (0.75, 0.85, 0.97)),
        "overcast": ((0.60, 0.62, 0.66), (0.80, 0.80, 0.82)),
        "dusk": ((0.25, 0.20, 0.45), (0.98, 0.60, 0.35)),
        "night": ((0.02, 0.02, 0.08), (0.10, 0.10, 0.20)),
    }[time_of_day]
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(np.float32(top) * (1 - t) + np.float32(bottom) * t, (size, size, 3)).copy()
    for _ in range(int(rng.integers(0, 5))):  # clouds
        cloud = np.zeros((size, size), np.float32)
        cv2.ellipse(
            cloud,
            (int(rng.integers(size)), int(rng.integers(size // 2))),
            (int(rng.integers(20, 70)), int(rng.integers(8, 20))),
            0,
            0,
            360,
            0.6,
            -1,
        )
        cloud = cv2.GaussianBlur(cloud, (0, 0), 8)[..., None]
        shade = 0.3 if time_of_day == "night" else 0.95
        image = image * (1 - cloud) + shade * cloud
    ground = {
        "summer": (0.30, 0.50, 0.25),
        "autumn": (0.55, 0.40, 0.20),
        "winter": (0.92, 0.93, 0.96),
        "spring": (0.40, 0.60, 0.30),
    }[season]
    horizon = int(size * rng.uniform(0.7, 0.9))
    image[horizon:] = jitter(rng, ground, 0.05)
    for _ in range(int(rng.integers(2, 9))):  # an anonymous city skyline, shared by all classes
        x, w, h = int(rng.integers(size)), int(rng.integers(10, 40)), int(rng.integers(10, 70))
        grey = float(rng.uniform(0.3, 0.7))
        image[max(horizon - h, 0) : horizon, x : x + w] = (grey, grey, grey * 1.05)
    return image


def _occluders(rng: np.random.Generator, image: np.ndarray, season: str) -> None:
    size = image.shape[0]
    for _ in range(int(rng.integers(0, 4))):
        x, y = int(rng.integers(size)), int(size * rng.uniform(0.75, 1.0))
        what = rng.choice(["tree", "person", "car", "lamp"])
        if what == "tree":
            cv2.rectangle(image, (x - 3, y - 40), (x + 3, y), (0.3, 0.2, 0.1), -1)
            leaves = (
                (0.9, 0.9, 0.95)
                if season == "winter"
                else (0.55, 0.35, 0.1)
                if season == "autumn"
                else (0.1, 0.4, 0.15)
            )
            r = int(rng.integers(15, 40))
            cv2.circle(image, (x, y - 40 - r // 2), r, jitter(rng, leaves), -1, cv2.LINE_AA)
        elif what == "person":
            colour = jitter(rng, (0.2, 0.2, 0.25), 0.15)
            cv2.ellipse(image, (x, y - 20), (7, 20), 0, 0, 360, colour, -1, cv2.LINE_AA)
            cv2.circle(image, (x, y - 45), 6, (0.8, 0.6, 0.5), -1, cv2.LINE_AA)
        elif what == "car":
            colour = jitter(rng, tuple(rng.uniform(0, 1, 3)), 0.0)
            cv2.rectangle(image, (x - 30, y - 22), (x + 30, y - 5), colour, -1)
            cv2.rectangle(image, (x - 18, y - 34), (x + 14, y - 22), colour, -1)
        else:
            cv2.line(image, (x, y), (x, y - 120), (0.15, 0.15, 0.15), 3, cv2.LINE_AA)
            cv2.circle(image, (x, y - 120), 6, (1.0, 0.95, 0.7), -1, cv2.LINE_AA)


def render_photo(drawing: Canvas, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One photo of a landmark: viewpoint, light, season, weather, occlusion, camera."""
    time_of_day = rng.choice(["day", "day", "overcast", "dusk", "night"])
    season = rng.choice(["summer", "autumn", "winter", "spring"])
    image = _sky(rng, size, time_of_day, season)

    # Viewpoint: where the landmark lands in the frame, and a perspective tilt of its corners.
    scale = rng.uniform(0.55, 1.15) * size
    cx, bottom = size * rng.uniform(0.3, 0.7), size * rng.uniform(0.8, 1.1)
    box = np.float32(
        [
            [cx - scale / 2, bottom - scale],
            [cx + scale / 2, bottom - scale],
            [cx + scale / 2, bottom],
            [cx - scale / 2, bottom],
        ]
    )
    box += rng.normal(0, 0.08 * scale, box.shape).astype(np.float32)
    source = np.float32([[0, 0], [CANVAS, 0], [CANVAS, CANVAS], [0, CANVAS]])
    warp = cv2.getPerspectiveTransform(source, box)
    rgb = cv2.warpPerspective(drawing.rgb, warp, (size, size), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(drawing.mask, warp, (size, size), flags=cv2.INTER_AREA)[..., None]
    windows = cv2.warpPerspective(drawing.windows, warp, (size, size), flags=cv2.INTER_AREA)[..., None]

    # Light: sun from one side, overall level by time of day; at night only windows glow.
    side = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0), size, dtype=np.float32)[None, :, None]
    level = {"day": 1.0, "overcast": 0.8, "dusk": 0.65, "night": 0.18}[time_of_day] * rng.uniform(0.85, 1.15)
    lit = rgb * side * level
    if time_of_day in ("night", "dusk"):
        glow = np.float32(jitter(rng, (1.0, 0.85, 0.45), 0.05))
        lit = lit * (1 - windows) + glow * windows * (1.0 if time_of_day == "night" else 0.6)
    if season == "winter":
        lit = lit * 0.85 + 0.15
    image = image * (1 - mask) + lit * mask
    if time_of_day == "dusk":
        image *= np.float32(jitter(rng, (1.05, 0.9, 0.8), 0.03))

    _occluders(rng, image, season)
    fog = rng.uniform(0, 0.45) if rng.random() < 0.3 else 0.0
    image = image * (1 - fog) + fog * 0.75
    image *= np.float32(rng.uniform(0.9, 1.1, 3))  # white balance
    blur = rng.uniform(0, 1.6)
    if blur > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    image = image + rng.normal(0, rng.uniform(0, 0.035), image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


# --- the competition folder -----------------------------------------------------------


@dataclass(frozen=True)
class SampleConfig:
    seen_classes: int = 50
    unseen_classes: int = 50
    train_per_class: int = 15
    query_per_class: int = 2
    gallery_per_class: int = 4
    size: int = 256
    seed: int = 0


def _save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        tmp.write_bytes(encoded.tobytes())


GENERATOR = "competition.data.sample"


def _marker(path: Path) -> dict:
    """The sample set's description, {} when the folder is not (or not yet) one."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else {}


def make_sample_competition(root: str | Path, config: SampleConfig = SampleConfig(), progress: bool = True) -> Path:
    """Write the embedded landmark set to `root` (skipped when already complete)."""
    root = Path(root)
    marker = root / "sample.json"
    wanted = {"generator": GENERATOR, "version": 1, **config.__dict__}
    found = _marker(marker)
    if found == wanted:
        return root
    if not found and foreign_files(root):  # labels.csv and train/ go here: never over a user's own
        raise CompeteError(f"{root} holds files and is not a sample set: not replaced; choose a new or empty folder")
    atomic_write_json(marker, {"generator": GENERATOR, "complete": False})  # ours from here on, even if stopped
    total = config.seen_classes + config.unseen_classes
    rows: list[tuple[str, str]] = []
    eval_items: list[tuple[str, int, np.ndarray]] = []  # (split, class index, image)
    for index in steps(range(total), "drawing landmarks", enabled=progress):
        spec = landmark_spec(index, config.seed)
        drawing = draw_landmark(spec)
        seen = index < config.seen_classes
        n_train = config.train_per_class if seen else 0
        n_photos = n_train + config.query_per_class + config.gallery_per_class
        for photo in range(n_photos):
            rng = np.random.default_rng([config.seed, index, photo])
            image = render_photo(drawing, rng, config.size)
            quality = int(rng.integers(70, 96))
            if photo < n_train:
                _save_jpeg(root / "train" / spec.name / f"{photo:03d}.jpg", image, quality)
            else:
                split = "query" if photo < n_train + config.query_per_class else "gallery"
                eval_items.append((split, index, image))
    # Anonymous, shuffled names so the file name says nothing about the landmark.
    order = np.random.default_rng([config.seed, 1]).permutation(len(eval_items))
    counters = {"query": 0, "gallery": 0}
    for position in order:
        split, index, image = eval_items[position]
        counters[split] += 1
        name = f"{split[0]}_{counters[split]:04d}.jpg"
        _save_jpeg(root / split / name, image, 90)
        rows.append((f"{split}/{name}", landmark_spec(index, config.seed).name))
    rows.sort()
    atomic_write_text(root / "labels.csv", "image,class\n" + "".join(f"{a},{b}\n" for a, b in rows))
    atomic_write_json(marker, wanted)
    return root
