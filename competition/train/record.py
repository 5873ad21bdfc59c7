"""The run's record (runs.RunRecord) as training builds it from what it measured and chose."""

from __future__ import annotations

from pathlib import Path

from competition.runs import Judgement, RunRecord
from competition.settings.train import TrainConfig


def run_record(
    config: TrainConfig, weights_origin: str, comparison: dict, fusion: dict, postprocess: dict
) -> RunRecord:
    """From validation's `comparison` against the pretrained backbone, the label `fusion`'s summary
    ({} without one) and the `postprocess` choice's: the closed-set verdict is the run with its
    fusion, since that is what --landmarks known ranks by."""
    return RunRecord(
        regime=config.regime,
        head=config.head_resolved,
        landmarks=config.landmarks,
        weights_origin=weights_origin,
        augmentation=augmentation_of(config.use_augmented, config.head_resolved, config.augmented_folder),
        classifier=fusion.get("classifier", ""),
        unseen=Judgement.of(comparison.get("unseen", {})),
        known=Judgement.of((fusion.get("validation") or comparison).get("seen", {})),
        postprocess=postprocess.get("steps") or None,
    )


def augmentation_of(use_augmented: bool, head: str, folder: Path) -> str:
    """The recipe a run trained on, as the leaderboard shows it."""
    if not use_augmented or head == "whitening":
        return "none"  # the learned whitening is fitted on the original photos only
    from competition.augment.generate import recorded_recipe  # albumentations: submit loads it only for these

    recipe = recorded_recipe(folder)
    return f"{recipe['name']}×{recipe['target_per_class']}" if recipe else "none"
