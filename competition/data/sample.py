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

from competition.io import atomic_path, atomic_write_json, atomic_write_text
from competition.progress import steps

CANVAS = 384  # canonical landmark drawing size, before the camera warps it
KINDS = ("tower", "skyscraper", "dome", "arch", "bridge", "pyramid", "pagoda", "castle", "lighthouse", "obelisk")
MATERIALS = {  # RGB in [0, 1]
    "limestone": (0.85, 0.80, 0.68),
    "brick": (0.62, 0.27, 0.20),
    "marble": (0.93, 0.92, 0.90),
    "concrete": (0.58, 0.58, 0.56),
    "glass": (0.35, 0.52, 0.65),
    "sandstone": (0.80, 0.62, 0.40),
    "iron": (0.25, 0.24, 0.26),
    "copper": (0.35, 0.62, 0.52),
    "gold": (0.85, 0.68, 0.25),
    "terracotta": (0.78, 0.42, 0.28),
    "granite": (0.45, 0.42, 0.44),
    "jade": (0.30, 0.50, 0.35),
}
PATTERNS = ("grid", "arches", "stripes", "columns", "plain")


@dataclass(frozen=True)
class LandmarkSpec:
    name: str
    kind: str
    body: tuple[float, float, float]
    accent: tuple[float, float, float]
    roof: tuple[float, float, float]
    pattern: str
    width: float  # fraction of the canvas
    height: float
    tiers: int
    detail: int  # windows per row, pillars, cables... depending on the kind


def _jitter(rng: np.random.Generator, color: tuple[float, ...], amount: float = 0.06) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.normal(0, amount), 0, 1)) for c in color)  # type: ignore[return-value]


def landmark_spec(index: int, seed: int = 0) -> LandmarkSpec:
    rng = np.random.default_rng([seed, 7919, index])
    kind = KINDS[index % len(KINDS)]
    names = list(MATERIALS)
    body, accent, roof = (MATERIALS[names[i]] for i in rng.choice(len(names), size=3, replace=False))
    return LandmarkSpec(
        name=f"{kind}_{index:03d}",
        kind=kind,
        body=_jitter(rng, body),
        accent=_jitter(rng, accent),
        roof=_jitter(rng, roof),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        width=float(rng.uniform(0.35, 0.9)),
        height=float(rng.uniform(0.55, 0.95)),
        tiers=int(rng.integers(2, 6)),
        detail=int(rng.integers(3, 9)),
    )


class _Canvas:
    """RGB drawing + coverage mask + lit-window mask, all float32 on a square canvas."""

    def __init__(self, size: int = CANVAS):
        self.size = size
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.mask = np.zeros((size, size), np.float32)
        self.windows = np.zeros((size, size), np.float32)

    def poly(self, points, color, window: bool = False, hole: bool = False) -> None:
        pts = np.round(np.asarray(points, np.float32) * 16).astype(np.int32)  # 4 bits subpixel
        cv2.fillPoly(self.rgb, [pts], color, cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.mask, [pts], 0.0 if hole else 1.0, cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.windows, [pts], 1.0 if window else 0.0, cv2.LINE_AA, shift=4)

    def rect(self, x0, y0, x1, y1, color, **kw) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, **kw)

    def ellipse(self, cx, cy, rx, ry, color, start=0, end=360, **kw) -> None:
        points = cv2.ellipse2Poly((int(cx), int(cy)), (max(int(rx), 1), max(int(ry), 1)), 0, start, end, 5)
        self.poly(points, color, **kw)

    def line(self, p0, p1, color, thickness: int = 2) -> None:
        p0, p1 = tuple(int(v) for v in p0), tuple(int(v) for v in p1)
        cv2.line(self.rgb, p0, p1, color, thickness, cv2.LINE_AA)
        cv2.line(self.mask, p0, p1, 1.0, thickness, cv2.LINE_AA)


def _facade(c: _Canvas, spec: LandmarkSpec, x0: float, y0: float, x1: float, y1: float) -> None:
    """Fill a wall rectangle with the landmark's facade pattern."""
    c.rect(x0, y0, x1, y1, spec.body)
    w, h = x1 - x0, y1 - y0
    cols = max(2, spec.detail)
    rows = max(1, int(round(h / max(w / cols, 1) * 0.6)))
    cw, rh = w / cols, h / rows
    window_color = tuple(v * 0.35 for v in spec.accent)
    for r in range(rows):
        for k in range(cols):
            wx, wy = x0 + k * cw, y0 + r * rh
            if spec.pattern == "grid":
                c.rect(wx + cw * 0.25, wy + rh * 0.2, wx + cw * 0.75, wy + rh * 0.8, window_color, window=True)
            elif spec.pattern == "arches":
                c.rect(wx + cw * 0.2, wy + rh * 0.45, wx + cw * 0.8, wy + rh * 0.9, window_color, window=True)
                c.ellipse(wx + cw * 0.5, wy + rh * 0.45, cw * 0.3, cw * 0.3, window_color, 180, 360, window=True)
    if spec.pattern == "stripes":
        for r in range(0, rows * 2, 2):
            c.rect(x0, y0 + r * rh / 2, x1, y0 + (r + 1) * rh / 2, spec.accent)
    elif spec.pattern == "columns":
        for k in range(cols + 1):
            cx = x0 + k * cw
            c.rect(cx - cw * 0.12, y0, cx + cw * 0.12, y1, spec.accent)
        for k in range(cols):
            c.rect(
                x0 + k * cw + cw * 0.3, y0 + h * 0.3, x0 + k * cw + cw * 0.7, y1 - h * 0.1, (0.1, 0.1, 0.1), window=True
            )


def _draw_landmark(spec: LandmarkSpec) -> _Canvas:
    c = _Canvas()
    s = c.size
    base = s * 0.97
    width, height = spec.width * s * 0.9, spec.height * s * 0.9
    cx = s / 2
    left, right, top = cx - width / 2, cx + width / 2, base - height
    kind = spec.kind
    if kind == "tower":
        tier_h = height * 0.8 / spec.tiers
        for t in range(spec.tiers):
            half = width / 2 * (1 - 0.18 * t) * 0.6
            _facade(c, spec, cx - half, base - (t + 1) * tier_h, cx + half, base - t * tier_h)
            c.rect(cx - half * 1.1, base - (t + 1) * tier_h, cx + half * 1.1, base - (t + 1) * tier_h + 6, spec.accent)
        c.poly([(cx - width * 0.12, top + height * 0.2), (cx, top), (cx + width * 0.12, top + height * 0.2)], spec.roof)
    elif kind == "skyscraper":
        w = width * 0.55
        _facade(c, spec, cx - w / 2, top + height * 0.15, cx + w / 2, base)
        _facade(c, spec, cx - w / 3, top + height * 0.05, cx + w / 3, top + height * 0.15)
        c.line((cx, top + height * 0.05), (cx, top - 5), spec.roof, 3)
        for k in range(spec.tiers):
            y = top + height * 0.15 + k * height * 0.85 / spec.tiers
            c.rect(cx - w / 2, y, cx + w / 2, y + 4, spec.accent)
    elif kind == "dome":
        body_top = base - height * 0.45
        _facade(c, spec, left, body_top, right, base)
        drum = width * 0.3
        c.rect(cx - drum, body_top - height * 0.12, cx + drum, body_top, spec.accent)
        c.ellipse(cx, body_top - height * 0.12, drum * 1.05, height * 0.3, spec.roof, 180, 360)
        c.rect(cx - 6, body_top - height * 0.12 - height * 0.3 - 20, cx + 6, body_top - height * 0.42, spec.accent)
        if spec.tiers >= 4:
            for side in (left, right - width * 0.12):
                c.rect(side, body_top - height * 0.3, side + width * 0.12, body_top, spec.body)
                c.ellipse(side + width * 0.06, body_top - height * 0.3, width * 0.06, width * 0.08, spec.roof, 180, 360)
    elif kind == "arch":
        _facade(c, spec, left, top + height * 0.3, right, base)
        c.rect(left - 8, top + height * 0.22, right + 8, top + height * 0.32, spec.accent)
        ow = width * 0.18
        c.rect(cx - ow, base - height * 0.4, cx + ow, base, (0, 0, 0), hole=True)
        c.ellipse(cx, base - height * 0.4, ow, ow, (0, 0, 0), 180, 360, hole=True)
        if spec.tiers >= 3:
            for off in (-width * 0.32, width * 0.32):
                c.rect(cx + off - ow / 2, base - height * 0.22, cx + off + ow / 2, base, (0, 0, 0), hole=True)
        c.rect(left + width * 0.2, top + height * 0.12, right - width * 0.2, top + height * 0.22, spec.roof)
    elif kind == "bridge":
        deck = base - height * 0.35
        c.rect(s * 0.02, deck, s * 0.98, deck + 12, spec.body)
        for k in range(spec.detail % 4 + 1):
            ax = s * 0.02 + (k + 0.5) * s * 0.96 / (spec.detail % 4 + 1)
            c.ellipse(ax, deck + 12, s * 0.96 / (spec.detail % 4 + 1) / 2, height * 0.3, spec.accent, 0, 180)
        for px in (s * 0.3, s * 0.7):
            c.rect(px - 10, top, px + 10, base, spec.roof)
            for k in range(spec.detail):
                c.line(
                    (px, top + 10),
                    (px + (k + 1) * s * 0.2 / spec.detail * (1 if px > s / 2 else -1) * 2, deck),
                    spec.accent,
                    1,
                )
    elif kind == "pyramid":
        steps = spec.tiers * 3
        for k in range(steps):
            y0, y1 = base - (k + 1) * height / steps, base - k * height / steps
            half = width / 2 * (1 - k / steps)
            c.rect(cx - half, y0, cx + half, y1, spec.body if k % 2 else spec.accent)
        c.rect(cx - 8, base - height * 0.25, cx + 8, base, (0.1, 0.1, 0.1), window=True)
    elif kind == "pagoda":
        tiers = spec.tiers + 2
        tier_h = height * 0.85 / tiers
        for t in range(tiers):
            half = width / 2 * (1 - 0.1 * t) * 0.7
            y1 = base - t * tier_h
            _facade(c, spec, cx - half * 0.8, y1 - tier_h * 0.7, cx + half * 0.8, y1)
            c.poly(
                [
                    (cx - half * 1.25, y1 - tier_h * 0.6),
                    (cx - half * 0.6, y1 - tier_h),
                    (cx + half * 0.6, y1 - tier_h),
                    (cx + half * 1.25, y1 - tier_h * 0.6),
                    (cx + half * 1.05, y1 - tier_h * 0.7),
                    (cx - half * 1.05, y1 - tier_h * 0.7),
                ],
                spec.roof,
            )
        c.line((cx, base - tiers * tier_h), (cx, top - 10), spec.accent, 3)
    elif kind == "castle":
        wall_top = base - height * 0.45
        _facade(c, spec, left, wall_top, right, base)
        for k in range(spec.detail * 2):
            x = left + k * width / (spec.detail * 2)
            if k % 2 == 0:
                c.rect(x, wall_top - 10, x + width / (spec.detail * 4), wall_top, spec.body)
        for tx in np.linspace(left, right, min(spec.tiers, 4)):
            c.rect(tx - 18, top + height * 0.2, tx + 18, base, spec.accent)
            c.poly([(tx - 24, top + height * 0.2), (tx, top), (tx + 24, top + height * 0.2)], spec.roof)
        c.rect(cx - 18, base - height * 0.2, cx + 18, base, (0, 0, 0), hole=True)
    elif kind == "lighthouse":
        bands = spec.tiers * 2
        for k in range(bands):
            y0, y1 = base - (k + 1) * height * 0.75 / bands, base - k * height * 0.75 / bands
            h0, h1 = width * 0.25 * (1 - 0.4 * (k + 1) / bands), width * 0.25 * (1 - 0.4 * k / bands)
            c.poly([(cx - h1, y1), (cx - h0, y0), (cx + h0, y0), (cx + h1, y1)], spec.body if k % 2 else spec.accent)
        lamp = base - height * 0.75
        c.rect(cx - width * 0.2, lamp - 6, cx + width * 0.2, lamp, spec.roof)
        c.rect(cx - width * 0.1, lamp - height * 0.12, cx + width * 0.1, lamp - 6, (0.9, 0.9, 0.6), window=True)
        c.ellipse(cx, lamp - height * 0.12, width * 0.11, height * 0.08, spec.roof, 180, 360)
    else:  # obelisk
        c.rect(cx - width * 0.3, base - height * 0.1, cx + width * 0.3, base, spec.accent)
        c.rect(cx - width * 0.2, base - height * 0.16, cx + width * 0.2, base - height * 0.1, spec.roof)
        half = width * (0.05 + 0.01 * spec.detail)
        c.poly(
            [
                (cx - half, base - height * 0.16),
                (cx - half * 0.7, top + height * 0.08),
                (cx + half * 0.7, top + height * 0.08),
                (cx + half, base - height * 0.16),
            ],
            spec.body,
        )
        c.poly([(cx - half * 0.7, top + height * 0.08), (cx, top), (cx + half * 0.7, top + height * 0.08)], spec.roof)
        for k in range(spec.tiers):
            y = base - height * 0.2 - k * height * 0.12
            c.rect(cx - half * 0.5, y - 4, cx + half * 0.5, y, spec.accent)
    return c


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
    image[horizon:] = _jitter(rng, ground, 0.05)
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
            cv2.circle(image, (x, y - 40 - r // 2), r, _jitter(rng, leaves), -1, cv2.LINE_AA)
        elif what == "person":
            colour = _jitter(rng, (0.2, 0.2, 0.25), 0.15)
            cv2.ellipse(image, (x, y - 20), (7, 20), 0, 0, 360, colour, -1, cv2.LINE_AA)
            cv2.circle(image, (x, y - 45), 6, (0.8, 0.6, 0.5), -1, cv2.LINE_AA)
        elif what == "car":
            colour = _jitter(rng, tuple(rng.uniform(0, 1, 3)), 0.0)
            cv2.rectangle(image, (x - 30, y - 22), (x + 30, y - 5), colour, -1)
            cv2.rectangle(image, (x - 18, y - 34), (x + 14, y - 22), colour, -1)
        else:
            cv2.line(image, (x, y), (x, y - 120), (0.15, 0.15, 0.15), 3, cv2.LINE_AA)
            cv2.circle(image, (x, y - 120), 6, (1.0, 0.95, 0.7), -1, cv2.LINE_AA)


def render_photo(drawing: _Canvas, rng: np.random.Generator, size: int = 256) -> np.ndarray:
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
        glow = np.float32(_jitter(rng, (1.0, 0.85, 0.45), 0.05))
        lit = lit * (1 - windows) + glow * windows * (1.0 if time_of_day == "night" else 0.6)
    if season == "winter":
        lit = lit * 0.85 + 0.15
    image = image * (1 - mask) + lit * mask
    if time_of_day == "dusk":
        image *= np.float32(_jitter(rng, (1.05, 0.9, 0.8), 0.03))

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


def make_sample_competition(root: str | Path, config: SampleConfig = SampleConfig(), progress: bool = True) -> Path:
    """Write the embedded landmark set to `root` (skipped when already complete)."""
    root = Path(root)
    marker = root / "sample.json"
    wanted = {"generator": "competition.data.sample", "version": 1, **config.__dict__}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return root
    total = config.seen_classes + config.unseen_classes
    rows: list[tuple[str, str]] = []
    eval_items: list[tuple[str, int, np.ndarray]] = []  # (split, class index, image)
    for index in steps(range(total), "drawing landmarks", enabled=progress):
        spec = landmark_spec(index, config.seed)
        drawing = _draw_landmark(spec)
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
