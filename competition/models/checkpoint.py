"""Checkpoints: plain tensors and containers, loaded with weights_only=True so a checkpoint from
elsewhere cannot run code; and a run's trained embedder from its best.pt."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from competition.errors import CompeteError
from competition.io import atomic_path
from competition.models.embedder import Embedder, EmbedderConfig, build_embedder
from competition.runs import BEST, read_config

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


def load_run_embedder(run_dir: str | Path) -> tuple[Embedder, EmbedderConfig, dict]:
    """The trained embedder of a run, its settings, and the run's config (its label classifier added)."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / BEST)
    if not isinstance(payload.get("embedder_config"), dict) or not isinstance(payload.get("embedder"), dict):
        raise CompeteError(f"{run_dir / BEST}: holds no model settings or weights (not written by compete train?)")
    saved = payload["embedder_config"]
    try:
        config = EmbedderConfig.from_dict({**saved, "pretrained": False})
        embedder, _ = build_embedder(config)
    except (TypeError, ValueError, KeyError) as error:
        raise CompeteError(
            f"{run_dir / BEST}: its model settings are damaged ({error}); train the run again"
        ) from error
    try:
        embedder.load_state_dict(payload["embedder"])
    except RuntimeError as error:
        unsaid = sorted({f.name for f in fields(EmbedderConfig)} - set(saved) - {"pretrained", "weights_file"})
        why = (
            f"its model settings lack {', '.join(unsaid)}, so the model built differs from its weights"
            if unsaid
            else f"weights do not match backbone {config.backbone} ({str(error).splitlines()[0]})"
        )
        raise CompeteError(f"{run_dir / BEST}: {why}; train the run again") from error
    embedder.eval()
    run_config = read_config(run_dir) or {}
    return embedder, config, {**run_config, "label_classifier": payload.get("label_classifier")}
