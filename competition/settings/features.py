"""`compete features`' settings: the models and views of submit's embedding, where the rows go,
nothing of ranking."""

from __future__ import annotations

from typing import ClassVar

from competition.settings.base import setting
from competition.settings.embedding import EmbeddingConfig, models_setting

FEATURES_PANELS = {
    "Model": ("model", "image_size", "resize", "flip", "scales"),
    "Data": ("data", "strict"),
    "Output": ("out", "runs_dir"),
    "Machine": ("batch_size", "device", "workers", "precision", "compile"),
}


class FeaturesConfig(EmbeddingConfig):
    """`compete features`: the embedding's settings and the folder the rows go to."""

    WHAT: ClassVar[str] = "features setting"
    PANELS: ClassVar[dict[str, tuple[str, ...]]] = FEATURES_PANELS
    model: list[str] = models_setting(
        "A backbone name, or a last-layer run (its backbone's features are written); one model."
    )
    out: str = setting(
        "features", "Folder the features go to (train, query and gallery rows, and features.json).", path="dir"
    )
