"""Read any photo a user may have as an RGB uint8 array, or say clearly why not.

Handles EXIF orientation, palette/RGBA/CMYK/grayscale/16-bit modes, and huge images
(decoded at reduced size so memory stays bounded).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from competition.errors import CompeteError

# .jfif/.jpe are JPEG under other names; a .gif is read as its first frame.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

# Nothing we train on needs more pixels than this on its longer side; larger photos
# are decoded reduced (JPEG draft mode) and then resized, so a 12000x9000 photo does
# not take gigabytes.
MAX_SIDE = 2048

# Pillow refuses images above ~179 MP as a "decompression bomb"; real panoramas can be
# larger, and we bound memory ourselves with draft mode and MAX_SIDE.
Image.MAX_IMAGE_PIXELS = 400_000_000
# Only JPEG can be decoded at reduced size; any other format is decoded whole first, so
# beyond this many pixels (a 381 KB 14000x14000 PNG took 5 GB) the file is refused instead.
MAX_FULL_DECODE_PIXELS = 64_000_000


class UnreadableImage(CompeteError):
    """A file that should be an image but cannot be decoded."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


# EXIF orientations 5-8 turn the photo a quarter: its upright height is the stored width.
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def upright_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) of the photo as `read_image` returns it (before any cap), from the file's
    header alone; None when the header cannot be read (`read_image` then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                turned = image.getexif().get(0x0112) in QUARTER_TURNS
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return (width, height) if turned else (height, width)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the actual range to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float32)
        high = array.max() or 1.0
        image = Image.fromarray((array / high * 255.0).astype(np.uint8))
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white, as a browser would show it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def read_image(path: str | Path, max_side: int = MAX_SIDE, needed: int = 0) -> np.ndarray:
    """Return the photo at `path` as an HxWx3 uint8 RGB array, upright per its EXIF.

    `needed`: the largest side the caller will resize to. A JPEG is then decoded at the
    smallest 1/2, 1/4 or 1/8 scale that keeps both sides at least twice that long (the
    area resize that follows still averages several pixels into one, as from the full
    decode), so a 4000 px photo embedded at 384 px never exists in memory at full size.
    """
    path = Path(path)
    draft_side = min(2 * needed, max_side) if needed > 0 else max_side
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF; we only need pixels
            with Image.open(path) as image:
                image.draft("RGB", (draft_side, draft_side))  # JPEG: decode at reduced scale
                if image.width * image.height > MAX_FULL_DECODE_PIXELS:
                    raise UnreadableImage(
                        f"{path}: {image.width}x{image.height} {image.format or ''} image is too large "
                        f"to decode safely (over {MAX_FULL_DECODE_PIXELS // 1_000_000} MP that cannot "
                        "be decoded reduced); save it smaller or as JPEG"
                    )
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                image.load()
                image = ImageOps.exif_transpose(image)
                image = _to_rgb(image)
                if max(image.size) > max_side:
                    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError as error:
        raise UnreadableImage(f"{path}: file not found") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = "empty file" if path.exists() and path.stat().st_size == 0 else str(error)
        raise UnreadableImage(f"{path}: not a readable image ({reason})") from error
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise UnreadableImage(f"{path}: unexpected image shape {array.shape}")
    return array
