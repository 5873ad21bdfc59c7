"""The models of a submission: trained runs (folder or name under runs/) or backbone names for
off-the-shelf features, each with what training said of it, and the guard that replaces a
run validation judged worse than its pretrained backbone."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import torch

from competition.errors import CompeteError
from competition.models.checkpoint import load_run_embedder
from competition.models.embedder import build_embedder
from competition.models.registry import REGISTRY, get_spec
from competition.models.view import model_view
from competition.retrieval.posteriors import LabelClassifier
from competition.retrieval.postprocess import describe
from competition.retrieval.rerank.memory import too_large
from competition.runs import (
    BEST,
    LAST,
    SUMMARY,
    RunRecord,
    Verdict,
    features_cache,
    find_run,
    read_summary,
    resolve_run_dir,
    trained_embeddings_cache,
)
from competition.settings.choices import LEARNED_POOLINGS
from competition.settings.embedding import EmbeddingConfig
from competition.settings.model import ModelSettings, View
from competition.settings.submit import PostProcess
from competition.train.record import augmentation_of

log = logging.getLogger(__name__)


class FellBack(str, Enum):
    """Why the guard replaced a run by its pretrained backbone, as its note says it."""

    LOST = "it lost in validation"
    UNTOLD = "validation could not tell"


@dataclass(kw_only=True)  # built in two places, read everywhere: every field named
class LoadedModel:
    label: str  # run name or backbone name
    embedder: object
    settings: ModelSettings  # what it embeds with, as trained (a run) or as asked (off the shelf)
    # what it is (regime, weights' origin, augmentation) and what validation said of a run;
    # off the shelf, or a run unfinished and kept: no verdicts
    record: RunRecord
    run_dir: Path | None = None  # None: not a trained run
    # The backbone is the pretrained one (off-the-shelf, last regime): its pooled features are
    # cached once per backbone and shared by every such model (and by training); only the projection differs.
    frozen: bool = False
    classifier: LabelClassifier | None = None  # the run's label classifier (closed-set queries)
    replaces: str = ""  # the run this pretrained backbone stands in for (--if-worse fallback)
    fell_back: FellBack | None = None  # why

    @property
    def backbone(self) -> str:
        return self.settings.backbone

    def cache(self, runs_dir: str, view: View) -> Path:
        """Where this model's vectors at a view are cached (runs.py keys them)."""
        if self.frozen:
            return features_cache(runs_dir, self.settings, self.record.weights_origin, view)
        return trained_embeddings_cache(runs_dir, self.run_dir, view)


def pretrained_model(settings: ModelSettings) -> LoadedModel:
    """Off-the-shelf features: the pretrained backbone and its pooling, no projection."""
    settings = settings.model_copy(update={"pretrained": True})
    embedder, origin = build_embedder(settings)
    embedder.eval()
    return LoadedModel(
        label=settings.backbone,
        embedder=embedder,
        settings=settings,
        record=RunRecord(regime="off-the-shelf", augmentation="none", weights_origin=origin),
        frozen=True,
    )


def pretrained_stand_in(settings: ModelSettings) -> LoadedModel:
    """The pretrained backbone a run falls back to or is ensembled with: its own settings, except a
    pooling fitted to the run's photos (NetVLAD's centres), which exists only in the run: GeM then."""
    fitted_to_data = settings.pooling in LEARNED_POOLINGS
    return pretrained_model(settings.model_copy(update={"pooling": "gem"}) if fitted_to_data else settings)


def _finished_summary(run_dir: Path, use_unfinished: bool) -> dict:
    """A finished run's validation verdicts. A run without them is still training or was
    stopped: its best.pt is an in-progress checkpoint that no validation has judged, so it is
    refused unless the user keeps runs whatever validation says."""
    summary = read_summary(run_dir)
    if summary is not None:
        return summary
    how = (
        f"continue it with `compete train --resume {run_dir}`"
        if (run_dir / LAST).exists()
        else "train it again (a last-layer run takes seconds on cached features)"
    )
    if not use_unfinished:
        raise CompeteError(
            f"{run_dir}: the run is unfinished (no {SUMMARY}: still training, or stopped); {how}, "
            "or pass --if-worse keep to submit its best.pt as it is"
        )
    log.warning("%s: unfinished run, its best.pt used as it is (--if-worse keep); %s", run_dir, how)
    return {}


def _classifier(payload, run_dir: Path) -> LabelClassifier | None:
    try:
        return LabelClassifier.from_payload(payload) if payload else None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CompeteError(
            f"{run_dir / BEST}: its label classifier is damaged ({error!r}); train the run again"
        ) from error


def load_run(run_dir: Path, use_unfinished: bool) -> LoadedModel:
    embedder, settings, config = load_run_embedder(run_dir)
    record = RunRecord.from_summary(_finished_summary(run_dir, use_unfinished), run_dir / SUMMARY)
    record = _completed_from_config(record, config)
    if record.regime not in ("full", "last", "?"):
        raise CompeteError(f"{run_dir}: 'regime' must be full or last, not {record.regime!r}; train the run again")
    return LoadedModel(
        label=run_dir.name,
        embedder=embedder,
        settings=settings,
        record=record,
        run_dir=run_dir,
        frozen=record.regime == "last" and bool(record.weights_origin),
        classifier=_classifier(config.get("label_classifier"), run_dir),
    )


def _completed_from_config(record: RunRecord, config: dict) -> RunRecord:
    """What a record lacks, from the run's config.json: runs before v0.5 kept their weights' origin
    and augmentation only there, and an unfinished run has no record yet."""
    head = record.head or config.get("head_resolved", "")
    augmented = Path(config.get("augmented") or Path(config.get("data", "")) / "augmented")
    return replace(
        record,
        regime=record.regime or config.get("regime", "?"),
        head=head,
        landmarks=record.landmarks or config.get("landmarks", ""),
        weights_origin=record.weights_origin or config.get("weights_origin", ""),
        augmentation=record.augmentation or augmentation_of(config.get("use_augmented", False), head, augmented),
    )


def load_model(model: str, config: EmbeddingConfig, keep_unfinished: bool = False) -> LoadedModel:
    """A run (folder or name under runs/) or, for a backbone name, its off-the-shelf features;
    `keep_unfinished`: a run still training loads as it is (else it is refused)."""
    if find_run(model, config.runs_dir) or (model not in REGISTRY and Path(model).exists()):
        return load_run(resolve_run_dir(model, config.runs_dir), keep_unfinished)
    get_spec(model)  # neither a run nor a known backbone: a clear error listing the backbones
    return pretrained_model(config.off_the_shelf_model(model))


def guard_unseen(
    models: list[LoadedModel], weights: list[float], if_worse: str, with_pretrained: float, landmarks: str = "mixed"
) -> tuple[list[LoadedModel], list[float], list[str]]:
    """Apply --if-worse and --with-pretrained; returns models, weights and what was done.

    Which validation judges a run depends on the queries: for `known` landmarks its verdict
    on held-out photos of training landmarks, otherwise on landmarks held out whole."""
    kept, kept_weights, notes = [], [], []
    for model, weight in zip(models, weights):
        record = model.record
        judged, where = (
            (record.known, "held-out photos of its training landmarks")
            if landmarks == "known"
            else (record.unseen, "held-out landmarks")
        )
        beats = judged.beats
        worse = beats is False or judged.untold
        if beats is None and judged.verdict is Verdict.UNJUDGED and model.run_dir is not None:
            log.warning("run %s has no validation verdict on %s: not guarded", model.label, where)
            notes.append(f"{model.label}: no validation verdict: not guarded")
        if beats is False:
            log.warning("run %s did worse than its pretrained backbone on %s", model.label, where)
        elif worse:
            log.warning("run %s: too few photos to tell whether it helps on %s", model.label, where)
        if worse and if_worse == "fallback":
            reason = FellBack.LOST if beats is False else FellBack.UNTOLD
            kept += [replace(pretrained_stand_in(model.settings), replaces=model.label, fell_back=reason)]
            kept_weights += [weight]
            notes.append(f"{model.label}: fell back to pretrained ({reason.value})")
            continue
        kept.append(model)
        kept_weights.append(weight)
        extra = 1.0 if worse and if_worse == "ensemble" else with_pretrained
        if extra > 0 and model.record.regime != "off-the-shelf":
            kept.append(pretrained_stand_in(model.settings))
            kept_weights.append(weight * extra)
            notes.append(f"{model.label} + pretrained×{extra:g}")
    return kept, kept_weights, notes


def view_of(model: ModelSettings, config: EmbeddingConfig, device: torch.device | None = None) -> View:
    """The view a model embeds at: its own unless submit overrides it (`--resize square` alone:
    the model's own size for a square view, lite0's 224), with submit's test-time views."""
    return model_view(
        model,
        image_size=config.image_size,
        resize=config.resize,
        flip=config.flip,
        scales=config.scales,
        device=device,
        precision=config.precision,
    )


def postprocess_of(
    given: PostProcess, models: list[LoadedModel], sizes: tuple[int, int], landmarks: str
) -> tuple[PostProcess, str]:
    """The steps submit runs, as the leaderboard describes them: those given, else (with `from_run`)
    those chosen by the validation of the first run that chose some (a run older than the choice
    chose none), if it can run them at this size. Not for `known` landmarks:
    the choice was judged on cosine rankings, and there the labels at full weight make another
    ranking (on both dev sets' closed-set copies the chosen step cost top-1 or mAP@10)."""
    chosen = next((m for m in models if m.record.postprocess), None)
    if given.given() or not given.from_run or chosen is None or landmarks == "known":
        return given, describe(given)
    try:
        steps = PostProcess.from_dict({**given.to_dict(), **chosen.record.postprocess, "from_run": True})
    except CompeteError as error:  # its words name flags; the user typed none of them
        raise CompeteError(
            f"{chosen.run_dir / SUMMARY}: the post-processing its validation chose is not valid ({error}); train the "
            "run again, or pass --no-from-run (or steps of your own)"
        ) from error
    if reason := too_large(steps, *sizes):
        log.warning("%s's validation chose %s, but %s: none", chosen.label, describe(steps), reason)
        return given, describe(given)
    return steps, f"{describe(steps)} (chosen by {chosen.label}'s validation)"
