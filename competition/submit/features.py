"""`compete features`: a competition's photos embedded once into a features folder
(data/features.py), so train and submit can run on another machine without the photos.

The rows are the pretrained backbone's pooled features, what the last-layer regime trains on
and what a last-layer run or an off-the-shelf model ranks with: training photos at the
training view (one view), query and gallery photos at submit's (its --flip and --scales),
each split under the name of the feature cache it fills here, which is how a reader knows
them for its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from competition.data.discover import ImageRecord, discover_competition
from competition.data.features import SPLITS, check_out_folder, write_meta, write_split
from competition.device import pick_device
from competition.errors import CompeteError
from competition.io import counted
from competition.models.view import model_view
from competition.retrieval.embed import Extraction, extract_features
from competition.retrieval.store import compact
from competition.settings.features import FeaturesConfig
from competition.submit.models import LoadedModel, load_model, view_of

log = logging.getLogger(__name__)


def export_features(config: FeaturesConfig, progress: bool = True) -> Path:
    """Embed every split of `config.data` with `config.model`'s pretrained backbone into
    `config.out`; returns its features.json. Re-running reuses the feature cache: only new
    photos are embedded."""
    if len(config.model) != 1:
        raise CompeteError(f"features are written for one model at a time, not {len(config.model)}")
    out = Path(config.out)
    check_out_folder(out, Path(config.data))
    competition = discover_competition(config.data, need_train=False)
    if competition.layout == "features":
        raise CompeteError(f"{config.data} holds features already, not photos")
    model = load_model(config.model[0], config)
    if not model.frozen:
        raise CompeteError(
            f"{model.label} fine-tuned its backbone (full regime): its vectors need the photos; features are "
            "written for a backbone name or a last-layer run"
        )
    device = pick_device(config.device or None)
    model.embedder.to(device)
    identities = {
        split: _export_split(config, model, (split, records), device, progress)
        for split in SPLITS
        if (records := getattr(competition, split))
    }
    if not identities:
        raise CompeteError(f"{config.data}: no photos in train/, query/ or gallery/")
    return write_meta(out, identities, model.label)


def _export_split(config: FeaturesConfig, model: LoadedModel, part: tuple[str, list], device, progress) -> str:
    """One split's rows written to config.out; returns their identity (the feature cache they fill here)."""
    split, records = part
    view = view_of(model.settings, config, device) if split != "train" else _training_view(model, config, device)
    cache = model.cache(config.runs_dir, view)
    vectors, failed = extract_features(
        model.embedder.pooled,
        [r.path for r in records],
        view,
        device,
        cache_dir=cache,
        how=Extraction(
            batch_size=config.batch_size,
            strict=config.strict,
            description=f"{model.label}: {split}",
            progress=progress,
            workers=config.workers,
        ),
    )
    # an unreadable training photo is left out, as training leaves it; a query or gallery photo keeps its
    # zero row, as submit ranks it, so the submission still lists its id
    kept = _readable(records, failed) if split == "train" else np.arange(len(records))
    rows = compact(vectors[kept])  # float16, as the feature cache holds them
    write_split(Path(config.out), split, [records[i].name for i in kept], [records[i].label for i in kept], rows)
    log.info("%s: %s of %s written to %s", model.label, counted(len(kept), "row"), split, config.out)
    return cache.name


def _training_view(model: LoadedModel, config: FeaturesConfig, device):
    """The view training embeds its photos at: the model's own (or --image-size/--resize), one of it."""
    return model_view(
        model.settings, image_size=config.image_size, resize=config.resize, device=device, precision=config.precision
    )


def _readable(records: list[ImageRecord], failed: list[Path]) -> np.ndarray:
    """Rows of the photos that decoded (extract_features named the others)."""
    unreadable = set(failed)
    return np.array([i for i, r in enumerate(records) if r.path not in unreadable], dtype=int)
