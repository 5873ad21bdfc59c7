"""A sweep file expanded into the configurations it asks for.

    name: quick
    data: data/sample
    off_the_shelf: [efficientnet_lite0]     # rows without training, first in the table
    grid:                                   # every combination of these lists
      backbone: [efficientnet_lite0, efficientnet_lite1]
      regime: [last, full]
      augment: [none, light]                # a recipe preset or file; none = the photos alone
    configurations:                         # and/or single configurations, settings as in train
      - {backbone: efficientnet_lite0, regime: full, head: arcface}
    train: {epochs: 3}                      # settings every configuration shares
    augment_target: 60                      # variants per landmark for any recipe
    submit:                                 # one leaderboard row per variant and configuration
      - {name: plain}
      - {name: rerank, re_ranking: k-reciprocal, rerank_k1: 8, rerank_k2: 3}
    ensemble_top: 2                         # also the ensemble of the 2 best runs

A configuration's id is a readable label and a hash of its settings, so re-running the
same file finds what is already done, and changing a setting makes a new configuration.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from competition.errors import CompeteError
from competition.io import check_plain_name, fingerprint
from competition.settings.files import read_settings_file
from competition.settings.model import DEFAULT_BACKBONE
from competition.settings.submit import SubmitConfig
from competition.settings.sweep import SweepFile
from competition.settings.train import TrainConfig
from competition.train.config import checked

# Settings a sweep decides itself: where runs go and what they are called.
SWEEP_OWNED = {"data", "run_name", "runs_dir", "augmented", "use_augmented"}
SUBMIT_OWNED = {"data", "model", "name", "submissions_dir", "leaderboard", "runs_dir"}


@dataclass
class Configuration:
    """One row of the results table before it runs: a backbone off the shelf, or a training run."""

    id: str
    backbone: str
    regime: str  # "off-the-shelf", "last" or "full"
    settings: dict = field(default_factory=dict)  # TrainConfig settings beyond the sweep's own
    augment: str = "none"  # recipe preset or file
    varied: tuple[str, ...] = ()  # the settings its grid or list entry gives: what its label shows

    @property
    def trained(self) -> bool:
        return self.regime != "off-the-shelf"

    @property
    def label(self) -> str:
        extra = [f"{k}={self.settings[k]}" for k in self.varied if k in self.settings]
        if self.augment != "none":
            extra.append(f"augment={self.augment}")
        return f"{self.backbone} {self.regime}" + (f" ({', '.join(extra)})" if extra else "")


@dataclass
class SubmitVariant:
    name: str
    settings: dict  # SubmitConfig settings (post-processing flat)


@dataclass
class SweepPlan:
    file: SweepFile  # its name, data folder and places, as the sweep file gave them
    configurations: list[Configuration]
    variants: list[SubmitVariant]

    @property
    def out_dir(self) -> Path:
        return Path(self.file.out or Path(self.file.runs_dir) / "sweeps" / self.file.name)

    def train_config(self, configuration: Configuration, augmented: str = "") -> TrainConfig:
        return checked(
            TrainConfig.from_dict(
                configuration.settings
                | {
                    "backbone": configuration.backbone,
                    "regime": configuration.regime,
                    "data": self.file.data,
                    "runs_dir": self.file.runs_dir,
                    "run_name": self.run_name(configuration),
                    "augmented": augmented,
                    "use_augmented": bool(augmented),
                }
            )
        )

    def run_name(self, configuration: Configuration) -> str:
        return f"{self.file.name}-{configuration.id}"

    def submit_config(self, models: list[str], variant: SubmitVariant, name: str) -> SubmitConfig:
        return SubmitConfig.from_dict(
            variant.settings
            | {
                "data": self.file.data,
                "model": models,
                "name": name,
                "submissions_dir": self.file.submissions_dir,
                "leaderboard": self.file.leaderboard,
                "runs_dir": self.file.runs_dir,
            }
        )


MOST_CONFIGURATIONS = 1000  # at minutes a run on a CPU, already weeks; a typo'd grid must not expand to GBs


def configuration_id(backbone: str, regime: str, settings: dict, augment: str) -> str:
    # 48 bits: a 24-bit digest collided after ~6,000 configurations; 1,000 now collide about once in 10^9
    digest = fingerprint([json.dumps({"settings": settings, "augment": augment}, sort_keys=True)])[:12]
    return f"{backbone}-{regime}-{digest}"


def _configuration(entry: dict, shared: dict) -> Configuration:
    settings = shared | entry
    owned = sorted(set(settings) & SWEEP_OWNED)
    if owned:
        raise CompeteError(f"the sweep sets {', '.join(owned)} itself; remove them from the sweep file")
    augment = str(settings.pop("augment", "none"))
    backbone = settings.pop("backbone", DEFAULT_BACKBONE)
    regime = settings.pop("regime", TrainConfig.model_fields["regime"].default)
    varied = tuple(sorted(set(entry) - {"backbone", "regime", "augment"}))
    return Configuration(
        configuration_id(backbone, regime, settings, augment), backbone, regime, settings, augment, varied
    )


def _grid(grid: dict) -> list[dict]:
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise CompeteError("grid: each setting takes a non-empty list of values")
    sizes = [len(v) for v in grid.values()]
    if math.prod(sizes) > MOST_CONFIGURATIONS:
        raise CompeteError(
            f"grid: {' x '.join(map(str, sizes))} = {math.prod(sizes):,} configurations; at most "
            f"{MOST_CONFIGURATIONS:,} in one sweep (split it, or list the ones worth running)"
        )
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def plan_from_dict(data: dict, name: str = "sweep") -> SweepPlan:
    """Check a sweep's settings and expand its grid; every configuration's settings are checked
    as `compete train` would, so a typo fails before anything runs."""
    sweep = SweepFile.from_dict({"name": name} | data)
    entries = (_grid(sweep.grid) if sweep.grid else []) + list(sweep.configurations)
    configurations = [Configuration(f"{b}-off-the-shelf", b, "off-the-shelf") for b in sweep.off_the_shelf]
    configurations += [_configuration(dict(entry), sweep.train) for entry in entries]
    if not configurations:
        raise CompeteError("the sweep has no configurations: give off_the_shelf, grid or configurations")
    if len(configurations) > MOST_CONFIGURATIONS:
        raise CompeteError(f"the sweep has {len(configurations):,} configurations; at most {MOST_CONFIGURATIONS:,}")
    seen: dict[str, Configuration] = {}
    for configuration in configurations:
        twin = seen.setdefault(configuration.id, configuration)
        if twin is not configuration:
            same = (twin.backbone, twin.regime, twin.settings, twin.augment) == (
                configuration.backbone, configuration.regime, configuration.settings, configuration.augment
            )  # fmt: skip
            raise CompeteError(
                f"the sweep lists the same configuration twice ({configuration.id})"
                if same
                else f"two configurations share the id {configuration.id}; change one setting of either"
            )
    variants = [
        SubmitVariant(str(v.get("name", f"v{i}")), {k: x for k, x in v.items() if k != "name"})
        for i, v in enumerate(sweep.submit)
    ]
    plan = SweepPlan(sweep, configurations, variants)
    check_plain_name(sweep.name, "sweep name", "runs_dir or out")
    for configuration in plan.configurations:  # every setting checked before any work
        if configuration.trained:
            plan.train_config(configuration)
    for variant in plan.variants:
        owned = sorted(set(variant.settings) & SUBMIT_OWNED)
        if owned:
            raise CompeteError(f"submit variant {variant.name}: the sweep sets {', '.join(owned)} itself")
        plan.submit_config(["efficientnet_lite0"], variant, "check")
    if len({v.name for v in variants}) != len(variants):
        raise CompeteError("submit variants need distinct names")
    return plan


def load_sweep(path: str | Path, data: str | Path | None = None) -> SweepPlan:
    """A sweep file's plan; `data` runs it on another competition folder, under a name of its own
    (results of one folder are never taken for another's)."""
    settings = read_settings_file(path)
    if data is not None:
        name = str(settings.get("name", Path(path).stem))
        settings = settings | {"data": str(data), "name": f"{name}-{Path(data).resolve().name}"}
    return plan_from_dict(settings, name=Path(path).stem)
