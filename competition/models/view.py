"""A model's view, resolved once: the photo size and resize it embeds at, from its settings and
submit's overrides, with the test-time views and the device's precision (settings/model.View)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from competition.device import half_name
from competition.models.registry import get_spec, native_inputs
from competition.settings.model import ModelSettings, View

# The longer side of an aspect-preserving view, as a multiple of the backbone's native square
# side (efficientnet_lite0: 224 -> 384). On realdev-hr's full-size photos, off the shelf and
# learned-whitened, it beat both the native square and 320 px; photos smaller than it are not
# enlarged (data/dataset.py SMALLEST_ASPECT_SIDE), so thumbnails keep their native view.
ASPECT_SIDE_SCALE = 384 / 224


def model_view(
    model: ModelSettings,
    *,
    image_size: int = 0,
    resize: str = "",
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    device: torch.device | None = None,
    precision: str = "auto",
) -> View:
    """The view `model` embeds at; `image_size` and `resize` override its own (0 and "": keep).
    A backbone made for one input size (timm's fixed_input_size: ViT, Swin...; CLIP towers) is
    always embedded square."""
    native = native_inputs(get_spec(model.backbone))
    resize = "square" if native.fixed_size else resize or model.resize
    size = image_size or model.image_size
    if not size:
        size = native.size if resize == "square" else int(round(native.size * ASPECT_SIDE_SCALE / 32)) * 32
    return View(size, resize, flip, tuple(scales), half_name(device, precision) if device is not None else "")


def training_crop(model: ModelSettings) -> int:
    """The full regime's square training crops: --image-size, else the backbone's native size."""
    return model.image_size or native_inputs(get_spec(model.backbone)).size
