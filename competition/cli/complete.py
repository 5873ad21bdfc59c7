"""What the shell completes beyond choices: backbone names, run folders, augmentation recipes.

Each function runs on every Tab press, so it imports only what lists names (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer


def backbones(incomplete: str) -> list[str]:
    from competition.models.catalog import REGISTRY

    return [name for name in REGISTRY if name.startswith(incomplete)]


def runs(ctx: typer.Context, incomplete: str) -> list[str]:
    """Run folders (those with a config.json) under --runs-dir, then backbones for off-the-shelf features."""
    runs_dir = Path(ctx.params.get("runs_dir") or "runs")
    folders = sorted(config.parent.name for config in runs_dir.glob("*/config.json"))
    return [name for name in folders if name.startswith(incomplete)] + backbones(incomplete)


def recipes(incomplete: str) -> list[str]:
    """Augmentation presets, then recipe files here."""
    from competition.augment.recipes import PRESETS

    files = sorted(str(p) for pattern in ("*.yaml", "*.yml", "*.json") for p in Path().glob(pattern))
    return [name for name in [*PRESETS, *files] if name.startswith(incomplete)]


COMPLETIONS: dict[str, Callable] = {"backbones": backbones, "runs": runs, "recipes": recipes}
