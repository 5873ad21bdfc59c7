"""Checkpoints: plain tensors and containers, loaded with weights_only=True so a checkpoint from
elsewhere cannot run code; and a run's trained embedder from its best.pt."""

from __future__ import annotations

from pathlib import Path

import torch

from competition.errors import CompeteError
from competition.io import atomic_path
from competition.models.embedder import Embedder, build_embedder
from competition.runs import BEST, read_config
from competition.settings.model import ModelSettings

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CompeteError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's own message advises loading with weights_only=False, which would run any code
        # hidden in the file: never pass that advice on.
        reason = "it holds Python objects, not only tensors" if "weights_only" in str(error) else type(error).__name__
        raise CompeteError(f"{path}: unreadable checkpoint ({reason}); compete loads only plain tensors") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CompeteError(f"{path}: not a compete checkpoint of format {FORMAT_VERSION}")
    return payload


def saved_model(payload: dict, where: Path) -> tuple[ModelSettings, str]:
    """The model settings and projection a best.pt was written with: today's `model` and
    `projection`, or 0.3's `embedder_config` (which held both, and square views before `resize`)."""
    if isinstance(payload.get("embedder_config"), dict):  # a run of compete 0.3
        saved = dict(payload["embedder_config"])
        projection = saved.pop("projection", None)
        if projection == "none" and saved.get("embedding_dim"):  # a size asked for a linear projection
            projection = "linear"
        saved = {"resize": "square", **saved, "weights_file": saved.get("weights_file") or ""}
    else:
        saved, projection = payload.get("model"), payload.get("projection")
    if not isinstance(saved, dict) or not isinstance(payload.get("embedder"), dict):
        raise CompeteError(f"{where}: holds no model settings or weights (not written by compete train?)")
    if projection is None:
        raise CompeteError(f"{where}: its model settings lack projection, so no model can be built for its weights")
    try:
        # the weights are the run's: nothing pretrained to load (weights_file says what its backbone began from)
        return ModelSettings.from_dict({**saved, "pretrained": False}), projection
    except CompeteError as error:
        raise CompeteError(f"{where}: its model settings are damaged ({error}); train the run again") from error


def load_run_embedder(run_dir: str | Path) -> tuple[Embedder, ModelSettings, dict]:
    """The trained embedder of a run, its model settings, and the run's config (its label classifier added)."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / BEST)
    model, projection = saved_model(payload, run_dir / BEST)
    try:
        embedder, _ = build_embedder(model, projection)
    except (TypeError, ValueError, KeyError) as error:
        raise CompeteError(
            f"{run_dir / BEST}: its model settings are damaged ({error}); train the run again"
        ) from error
    try:
        embedder.load_state_dict(payload["embedder"])
    except RuntimeError as error:
        saved = payload.get("model") or payload.get("embedder_config")
        unsaid = sorted(set(ModelSettings.model_fields) - set(saved) - {"pretrained", "weights_file"})
        why = (  # a setting left out took its default, which may build another model
            f"its model settings lack {', '.join(unsaid)}, so the model built differs from its weights"
            if unsaid
            else f"weights do not match backbone {model.backbone} ({str(error).splitlines()[0]})"
        )
        raise CompeteError(f"{run_dir / BEST}: {why}; train the run again") from error
    embedder.eval()
    run_config = read_config(run_dir) or {}
    return embedder, model, {**run_config, "label_classifier": payload.get("label_classifier")}
