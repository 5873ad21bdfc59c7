"""Runs on disk, below both training (which writes them) and retrieval (which reads them):
checkpoints, where a run or a submission's vectors live, and loading a run's model.

`best.pt` holds what retrieval needs (embedder config + weights); `last.pt` holds the
whole training state for --resume. Both are plain tensors and containers, loaded with
weights_only=True so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from competition.errors import CompeteError
from competition.io import atomic_path
from competition.models.embedder import Embedder, EmbedderConfig, build_embedder

BEST = "best.pt"
LAST = "last.pt"
FORMAT_VERSION = 1
TOO_FEW = "too few photos to tell"  # a validation verdict: training could not be judged


def embeddings_file(runs_dir: str | Path, submission_name: str) -> Path:
    """Where a submission's final query/gallery vectors are kept, for `compete report`."""
    return Path(runs_dir) / "submission-embeddings" / f"{submission_name}.npz"


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


def resolve_run_dir(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run given as a folder path or as a name inside runs_dir."""
    for candidate in (Path(run), Path(runs_dir) / str(run)):
        if (candidate / BEST).is_file():
            return candidate
    for candidate in (Path(run), Path(runs_dir) / str(run)):
        if candidate.is_dir():
            raise CompeteError(
                f"{candidate}: run has no {BEST} (training unfinished or interrupted? "
                f"resume it with `compete train --resume {candidate}`)"
            )
    raise CompeteError(f"run '{run}' not found (looked for {Path(run)} and {Path(runs_dir) / str(run)})")


def load_run_embedder(run_dir: str | Path) -> tuple[Embedder, dict]:
    """The trained embedder of a run, and the run's config."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / BEST)
    if not isinstance(payload.get("embedder_config"), dict) or not isinstance(payload.get("embedder"), dict):
        raise CompeteError(f"{run_dir / BEST}: holds no model settings or weights (not written by compete train?)")
    config = EmbedderConfig.from_dict({**payload["embedder_config"], "pretrained": False})
    embedder, _ = build_embedder(config)
    try:
        embedder.load_state_dict(payload["embedder"])
    except RuntimeError as error:
        raise CompeteError(
            f"{run_dir / BEST}: weights do not match backbone {config.backbone} ({str(error).splitlines()[0]})"
        ) from error
    embedder.eval()
    run_config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    return embedder, {
        **run_config,
        "embedder_config": payload["embedder_config"],
        "label_classifier": payload.get("label_classifier"),
    }
