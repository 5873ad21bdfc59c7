"""The embedded set's landmarks: each a procedurally drawn building (its kind, proportions,
facade and materials) on a canonical canvas, before data/sample.py photographs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

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


def jitter(rng: np.random.Generator, color: tuple[float, ...], amount: float = 0.06) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.normal(0, amount), 0, 1)) for c in color)  # type: ignore[return-value]


def landmark_spec(index: int, seed: int = 0) -> LandmarkSpec:
    rng = np.random.default_rng([seed, 7919, index])
    kind = KINDS[index % len(KINDS)]
    names = list(MATERIALS)
    body, accent, roof = (MATERIALS[names[i]] for i in rng.choice(len(names), size=3, replace=False))
    return LandmarkSpec(
        name=f"{kind}_{index:03d}",
        kind=kind,
        body=jitter(rng, body),
        accent=jitter(rng, accent),
        roof=jitter(rng, roof),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        width=float(rng.uniform(0.35, 0.9)),
        height=float(rng.uniform(0.55, 0.95)),
        tiers=int(rng.integers(2, 6)),
        detail=int(rng.integers(3, 9)),
    )


class Canvas:
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


def _facade(c: Canvas, spec: LandmarkSpec, x0: float, y0: float, x1: float, y1: float) -> None:
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


class _Frame(NamedTuple):
    """Where a landmark stands on the canvas."""

    s: float  # canvas side
    base: float
    width: float
    height: float
    cx: float
    left: float
    right: float
    top: float


def _tower(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
    tier_h = height * 0.8 / spec.tiers
    for t in range(spec.tiers):
        half = width / 2 * (1 - 0.18 * t) * 0.6
        _facade(c, spec, cx - half, base - (t + 1) * tier_h, cx + half, base - t * tier_h)
        c.rect(cx - half * 1.1, base - (t + 1) * tier_h, cx + half * 1.1, base - (t + 1) * tier_h + 6, spec.accent)
    c.poly([(cx - width * 0.12, top + height * 0.2), (cx, top), (cx + width * 0.12, top + height * 0.2)], spec.roof)


def _skyscraper(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
    w = width * 0.55
    _facade(c, spec, cx - w / 2, top + height * 0.15, cx + w / 2, base)
    _facade(c, spec, cx - w / 3, top + height * 0.05, cx + w / 3, top + height * 0.15)
    c.line((cx, top + height * 0.05), (cx, top - 5), spec.roof, 3)
    for k in range(spec.tiers):
        y = top + height * 0.15 + k * height * 0.85 / spec.tiers
        c.rect(cx - w / 2, y, cx + w / 2, y + 4, spec.accent)


def _dome(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
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


def _arch(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
    _facade(c, spec, left, top + height * 0.3, right, base)
    c.rect(left - 8, top + height * 0.22, right + 8, top + height * 0.32, spec.accent)
    ow = width * 0.18
    c.rect(cx - ow, base - height * 0.4, cx + ow, base, (0, 0, 0), hole=True)
    c.ellipse(cx, base - height * 0.4, ow, ow, (0, 0, 0), 180, 360, hole=True)
    if spec.tiers >= 3:
        for off in (-width * 0.32, width * 0.32):
            c.rect(cx + off - ow / 2, base - height * 0.22, cx + off + ow / 2, base, (0, 0, 0), hole=True)
    c.rect(left + width * 0.2, top + height * 0.12, right - width * 0.2, top + height * 0.22, spec.roof)


def _bridge(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
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


def _pyramid(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
    steps = spec.tiers * 3
    for k in range(steps):
        y0, y1 = base - (k + 1) * height / steps, base - k * height / steps
        half = width / 2 * (1 - k / steps)
        c.rect(cx - half, y0, cx + half, y1, spec.body if k % 2 else spec.accent)
    c.rect(cx - 8, base - height * 0.25, cx + 8, base, (0.1, 0.1, 0.1), window=True)


def _pagoda(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
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


def _castle(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
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


def _lighthouse(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
    bands = spec.tiers * 2
    for k in range(bands):
        y0, y1 = base - (k + 1) * height * 0.75 / bands, base - k * height * 0.75 / bands
        h0, h1 = width * 0.25 * (1 - 0.4 * (k + 1) / bands), width * 0.25 * (1 - 0.4 * k / bands)
        c.poly([(cx - h1, y1), (cx - h0, y0), (cx + h0, y0), (cx + h1, y1)], spec.body if k % 2 else spec.accent)
    lamp = base - height * 0.75
    c.rect(cx - width * 0.2, lamp - 6, cx + width * 0.2, lamp, spec.roof)
    c.rect(cx - width * 0.1, lamp - height * 0.12, cx + width * 0.1, lamp - 6, (0.9, 0.9, 0.6), window=True)
    c.ellipse(cx, lamp - height * 0.12, width * 0.11, height * 0.08, spec.roof, 180, 360)


def _obelisk(c: Canvas, spec: LandmarkSpec, g: _Frame) -> None:
    s, base, width, height, cx, left, right, top = g
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


DRAWINGS = {  # one function per kind of landmark
    "tower": _tower,
    "skyscraper": _skyscraper,
    "dome": _dome,
    "arch": _arch,
    "bridge": _bridge,
    "pyramid": _pyramid,
    "pagoda": _pagoda,
    "castle": _castle,
    "lighthouse": _lighthouse,
    "obelisk": _obelisk,
}


def draw_landmark(spec: LandmarkSpec) -> Canvas:
    c = Canvas()
    s = c.size
    base = s * 0.97
    width, height = spec.width * s * 0.9, spec.height * s * 0.9
    cx = s / 2
    DRAWINGS[spec.kind](c, spec, _Frame(s, base, width, height, cx, cx - width / 2, cx + width / 2, base - height))
    return c
