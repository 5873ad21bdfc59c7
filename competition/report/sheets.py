"""Contact sheets: rows of image tiles with a label column, captions and coloured frames.

Used by `compete augment --preview` (original beside augmented) and by `compete report`
(each query beside its ranked results, correct ones framed green, wrong ones red).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from competition.io import atomic_path

LABEL_WIDTH = 230
GAP = 6
FRAME = 4
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
GREEN, RED = (40, 190, 70), (220, 50, 50)


@dataclass
class Tile:
    image: np.ndarray
    caption: str = ""
    frame: tuple[int, int, int] | None = None


def fit_tile(image: np.ndarray, tile: int) -> Image.Image:
    """Letterbox an image into a tile x tile square, keeping its aspect ratio."""
    picture = Image.fromarray(image)
    picture.thumbnail((tile, tile))
    canvas = Image.new("RGB", (tile, tile), BACKGROUND)
    canvas.paste(picture, ((tile - picture.width) // 2, (tile - picture.height) // 2))
    return canvas


def render_sheet(rows: list[tuple[str, list[Tile]]], tile: int, pair_gap: bool = False) -> Image.Image:
    """One row per (label, tiles); `pair_gap` widens the gap after every second tile."""
    columns = max(len(cells) for _, cells in rows)
    extra = (lambda column: (column // 2) * GAP) if pair_gap else (lambda column: 0)
    width = LABEL_WIDTH + columns * (tile + GAP) + extra(columns)
    sheet = Image.new("RGB", (width, len(rows) * (tile + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=11)
    for row_index, (label, cells) in enumerate(rows):
        top = GAP + row_index * (tile + GAP)
        draw.multiline_text((8, top + tile // 2 - 12), label, fill=TEXT, font=font, spacing=3)
        for column, cell in enumerate(cells):
            left = LABEL_WIDTH + column * (tile + GAP) + extra(column)
            sheet.paste(fit_tile(cell.image, tile), (left, top))
            if cell.frame:
                draw.rectangle((left, top, left + tile - 1, top + tile - 1), outline=cell.frame, width=FRAME)
            if cell.caption:
                draw.rectangle((left, top + tile - 15, left + tile, top + tile), fill=(0, 0, 0))
                draw.text((left + 3, top + tile - 14), cell.caption[: tile // 6], fill=TEXT, font=small)
    return sheet


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
