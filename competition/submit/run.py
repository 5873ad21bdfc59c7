"""`compete submit`: embed with every model, fuse, rank, write, validate, score and record.

The steps in order, each a function below; retrieval/ does the embedding, fusing, searching
and post-processing, evaluate/ the file, its checks and its score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch

from competition.data.checks import leaked_photos
from competition.data.dataset import scaled_sizes
from competition.data.discover import Competition, discover_competition
from competition.device import compiled, pick_device
from competition.distributed import Distributed, init_distributed
from competition.errors import CompeteError
from competition.evaluate.leaderboard import check_leaderboard
from competition.evaluate.recognition import recognition_problems, score_predictions, write_predictions
from competition.evaluate.scoring import left_out_note
from competition.evaluate.submission import check_submission_target, check_unique_ids, ranked_names, write_submission
from competition.evaluate.validate import validate_submission
from competition.io import exclusive_use
from competition.models.projection import project_rows
from competition.retrieval.embed import Extraction, extract_features
from competition.retrieval.ensemble import fuse_concat
from competition.retrieval.landmarks import KnownShare
from competition.retrieval.posteriors import FUSION_CANDIDATES
from competition.retrieval.postprocess import embedding_steps, scored_ranking
from competition.retrieval.rerank.memory import check_size
from competition.retrieval.search import Searcher, recall_against_exact, resolve_index
from competition.retrieval.verify import Verification, verify_ranking
from competition.runs import embeddings_file, graph_cache, local_features_cache
from competition.settings.submit import SubmitConfig
from competition.submit.closed_set import label_fusion, resolve_landmarks
from competition.submit.models import FellBack, LoadedModel, guard_unseen, load_model, postprocess_of, view_of
from competition.submit.output import Output, output_of
from competition.submit.recognition import recognise
from competition.submit.record import (
    leaderboard_record,
    record_row,
    save_ranked_vectors,
    score_ranking,
)
from competition.tracking import check_tracker, open_tracker

log = logging.getLogger(__name__)


@dataclass
class SubmitResult:
    path: Path | None  # None on a torchrun rank other than 0, which only embedded its share
    scores: dict | None
    record: dict
    skipped: list[str] = field(default_factory=list)  # unreadable query/gallery files (zero vectors)
    notes: list[str] = field(default_factory=list)  # what submit decided for the user to read (the landmarks kind)
    fell_back: dict[str, FellBack] = field(default_factory=dict)  # run -> why its pretrained backbone took its place
    landmarks: str = ""  # the kind of queries submitted for: known, new or mixed (auto resolved)
    fused: bool = False  # class posteriors fused into the ranking


def submit(config: SubmitConfig, progress: bool = True) -> SubmitResult:
    """Embed, rank, write, validate, score and record one submission. A named submission is held
    by one process from start to end (a second `submit --name same` at once stops, naming the
    first), so one file and one leaderboard row describe the same ranking."""
    output = output_of(config)
    if config.name and init_distributed().is_main:
        locks = Path(config.runs_dir) / "submission-locks"  # not in submissions/, which users upload from
        with exclusive_use(output.path(config.name), "submission", lock_dir=locks):
            return _submit(config, output, progress)
    return _submit(config, output, progress)


class Embeddings:
    """Each model's vectors of query and gallery photos, computed once through its cache (auto's
    estimate embeds the queries that the ranking reuses)."""

    def __init__(self, config: SubmitConfig, device: torch.device, dist: Distributed, progress: bool):
        self.config, self.device, self.dist, self.progress = config, device, dist, progress
        self.skipped: set[str] = set()
        self.done: dict[tuple[int, str], tuple[LoadedModel, np.ndarray]] = {}
        self.posteriors_done: dict[tuple[int, str], object] = {}

    def __call__(self, model: LoadedModel, records) -> np.ndarray:
        key = (id(model), records[0].split)
        if key not in self.done:
            vectors, failed = self._embed(model, records)
            self.skipped.update(str(p) for p in failed)
            self.done[key] = (model, vectors)  # the model kept alive: its id is not reused by another
        return self.done[key][1]

    def posteriors(self, model: LoadedModel, records):
        """The run's class posteriors of these photos, made once: auto's estimate and the fusion
        share the queries' (117k queries over 81k landmarks at Google Landmarks size: minutes)."""
        key = (id(model), records[0].split)
        if key not in self.posteriors_done:  # self(...) first: it keeps the model, so its id stays its own
            self.posteriors_done[key] = model.classifier.posteriors(self(model, records), self.progress, self.device)
        return self.posteriors_done[key]

    def release(self) -> None:
        """Each model's own vectors and posteriors let go once fused: at 760k gallery photos x 1280
        they are 4 GB, beside the fused copy and the search index the ranking still needs."""
        self.done.clear()
        self.posteriors_done.clear()

    def _embed(self, model: LoadedModel, records):
        config = self.config
        model.embedder.to(self.device)
        view = view_of(model.settings, config, self.device)
        vectors, failed = extract_features(
            model.embedder.pooled if model.frozen else model.embedder,
            [r.path for r in records],
            view,
            self.device,
            cache_dir=model.cache(config.runs_dir, view),
            how=Extraction(
                batch_size=config.batch_size,
                strict=config.strict,
                description=f"{model.label}: {records[0].split}",
                progress=self.progress,
                workers=config.workers,
                shards=self.dist,
            ),
        )
        if model.frozen:  # the run's own projection on the shared pooled features
            vectors = project_rows(model.embedder.projection, vectors, self.device)
        return vectors, failed


def release_gpu(models: list[LoadedModel], device: torch.device) -> None:
    """The models' GPU memory handed back once every photo is embedded: the search and its
    re-rankings need it, and a large gallery's index fills a 16 GB card."""
    if device.type != "cuda":
        return
    for model in models:
        model.embedder.cpu()
    torch.cuda.empty_cache()


def _competition(config: SubmitConfig, output: Output) -> Competition:
    """The competition folder, checked before any model loads."""
    check_leaderboard(config.leaderboard)  # before the work: its row must have a place to go
    if config.name:  # and its file
        check_submission_target(output.path(config.name))
    check_tracker(config.log_to)
    competition = discover_competition(config.data, need_train=False)
    if not competition.query or not (competition.gallery or not output.fmt.ranks):
        raise CompeteError(f"{config.data}: needs query/ and gallery/ images to make a submission")
    if not output.fmt.ranks and not competition.train_classes:
        raise CompeteError(
            f"{config.data}: --format {output.fmt.name} names a landmark of train/ per query; train/ has none"
        )
    if config.verify and competition.layout == "features":
        raise CompeteError(f"{config.data} holds features, not photos: --verify matches the photos' local features")
    check_size(config.postprocess, len(competition.query), len(competition.gallery))
    for records, what in ((competition.query, "query"), (competition.gallery, "gallery")):
        check_unique_ids([r.name for r in records], output.fmt, what)
    leaked_photos(competition.train, competition.query + competition.gallery)
    return competition


def _rank(config: SubmitConfig, k: int, steps, competition: Competition, vectors, searcher: Searcher, progress, fusion):
    """Search (and verify) the (query, gallery) vectors: the ranking, the index as described, the verification."""
    queries, gallery = vectors
    ranked_scores, ranking = scored_ranking(
        steps, queries, gallery, max(k, config.verify), searcher, fusion, graph_cache(config.runs_dir)
    )
    index = searcher.describe()
    if not searcher.exact:  # say what the approximation costs
        recall = recall_against_exact(queries, gallery, ranking, ranking.shape[1])
        index = f"{index} (recall@{ranking.shape[1]} vs exact {recall:.3f})"
        log.warning("approximate search: %s", index)
    verification = "off"
    if config.verify:
        ranking, cost = verify_ranking(
            ranking,
            ranked_scores,
            [r.path for r in competition.query],
            [r.path for r in competition.gallery],
            Verification(top=config.verify),
            cache_dir=local_features_cache(config.runs_dir),
            progress=progress,
        )
        verification = f"SIFT + MAGSAC, top {cost['top']}, {cost['per_query_s']:.2f} s/query"
    return ranking[:, :k], index, verification


def _write(output: Output, competition: Competition, name: str, ranking: np.ndarray) -> Path:
    """The submission file, validated: a file the competition would reject is never scored or recorded."""
    queries, gallery = [r.name for r in competition.query], [r.name for r in competition.gallery]
    path = write_submission(output.path(name), queries, ranked_names(ranking, gallery), output.fmt)
    problems = validate_submission(path, queries, gallery, min(output.k, len(gallery)))
    if problems:
        raise CompeteError(f"{path} was written but is not valid, so it was not scored: " + "; ".join(problems))
    return path


def _submission_name(config: SubmitConfig, models: list[LoadedModel]) -> str:
    """--name, or the models' labels and the time."""
    return config.name or f"{'+'.join(m.label for m in models)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _recognise(
    config: SubmitConfig, output: Output, competition, models, weights, query_vectors, embed, dist
) -> SubmitResult:
    """A recognition submission: each query's landmark and confidence, scored by GAP when every
    query has a label."""
    labels = np.array([r.label for r in competition.train])
    found = recognise(
        models, weights, query_vectors, lambda model: embed(model, competition.train), labels, dist.is_main
    )
    if not dist.is_main:
        return SubmitResult(None, None, {}, sorted(embed.skipped))
    landmarks, confidence, how = found
    name = _submission_name(config, models)
    queries = [r.name for r in competition.query]
    path = write_predictions(output.path(name), queries, landmarks, confidence)
    if problems := recognition_problems(path, queries, competition.train_classes):
        raise CompeteError(f"{path} was written but is not valid, so it was not scored: " + "; ".join(problems))
    labelled = all(r.label is not None for r in competition.query)
    scores = score_predictions(path, competition) if labelled else None
    record = leaderboard_record(
        config, models, weights, name=name, recognition=how, submission=str(path), **(scores or {}),
        settings=config.to_dict(),
    )  # fmt: skip
    if scores is not None:
        record_row(config, path, record)
    return SubmitResult(path, scores, record, sorted(embed.skipped), [f"recognition: {how}"], landmarks="known")


def _loaded_models(config: SubmitConfig, device: torch.device) -> list[LoadedModel]:
    """The models asked for, each checked for its view before any photo is read and its backbone
    compiled for the device (both the pooled features and the full embedding go through it)."""
    models = [load_model(m, config, keep_unfinished=config.if_worse == "keep") for m in config.model]
    for model in models:
        view = view_of(model.settings, config)
        scaled_sizes(view.size, view.scales)  # the largest view within the limit
        model.embedder.backbone = compiled(model.embedder.backbone, device, config.compile)
    return models


def _notes(
    config: SubmitConfig,
    scores: dict | None,
    estimate: KnownShare | None,
    landmarks: str,
    fusion_note: str,
    verification: str,
) -> list[str]:
    """What submit decided and did, for the user to read."""
    notes = [estimate.describe()] if estimate is not None else []
    if config.log_to and scores is None:
        notes.append(f"--log-to {config.log_to}: nothing logged, there are no scores without labels.csv")
    if landmarks in ("known", "mixed") and fusion_note != "off":
        notes.append(f"landmarks {landmarks}: {fusion_note}")
    if config.verify:
        notes.append(f"geometric verification: {verification}")
    if scores and (left_out := left_out_note(scores)):
        notes.append(left_out)
    return notes


def _submit(config: SubmitConfig, output: Output, progress: bool) -> SubmitResult:
    competition = _competition(config, output)
    # relative weights: scaled so the largest is 1 (1e308,1e308 would overflow float32 as it is)
    given = config.ensemble_weights
    weights = [w / max(given) for w in given] if given else [1.0] * len(config.model)
    dist = init_distributed()  # under torchrun every process embeds a share; rank 0 does the rest
    device = dist.device() or pick_device(config.device or None)
    models = _loaded_models(config, device)
    embed = Embeddings(config, device, dist, progress)
    posteriors = tuple(partial(embed.posteriors, records=side) for side in (competition.query, competition.gallery))
    landmarks, estimate = resolve_landmarks(config.landmarks, models, posteriors[0])
    models, weights, guard_notes = guard_unseen(models, weights, config.if_worse, config.with_pretrained, landmarks)
    query_vectors = [embed(model, competition.query) for model in models]
    if not output.fmt.ranks:
        return _recognise(config, output, competition, models, weights, query_vectors, embed, dist)
    gallery_vectors = [embed(model, competition.gallery) for model in models]
    if not dist.is_main:
        return SubmitResult(None, None, {}, sorted(embed.skipped))
    release_gpu(models, device)  # faiss allocates on the GPU next
    fusion, fusion_note = label_fusion(models, weights, query_vectors, gallery_vectors, landmarks, posteriors)
    sizes = len(competition.query), len(competition.gallery)
    steps, steps_note = postprocess_of(config.postprocess, models, sizes, landmarks)
    kind = resolve_index(config.index, len(competition.gallery), len(competition.query))
    depth = max(output.k, config.verify, FUSION_CANDIDATES if fusion else 0)
    searcher = Searcher(kind, depth, config.nprobe, config.index_factory, progress=progress)
    fused = fuse_concat(query_vectors, weights), fuse_concat(gallery_vectors, weights)
    del query_vectors, gallery_vectors
    embed.release()
    queries, gallery = embedding_steps(steps, *fused, searcher)
    vectors = queries, gallery
    del fused
    ranking, index, verification = _rank(config, output.k, steps, competition, vectors, searcher, progress, fusion)
    name = _submission_name(config, models)
    path = _write(output, competition, name, ranking)
    save_ranked_vectors(embeddings_file(config.runs_dir, name), competition, queries, gallery)
    scores = score_ranking(ranking, competition, output.map_k)
    record = leaderboard_record(
        config,
        models,
        weights,
        name=name,
        unseen_guard="; ".join(guard_notes),
        landmarks=landmarks if estimate is None else f"{landmarks} (auto{estimate.short()})",
        label_fusion=fusion_note,
        postprocess=steps_note,
        verification=verification,
        index=index,
        submission=str(path),
        **(scores or {}),
        settings=config.to_dict(),  # all of them: a row is enough to make its submission again
    )
    if scores is not None:
        record_row(config, path, record)
        tracker = open_tracker(config.log_to, f"submit-{name}", config.runs_dir, config.to_dict())
        if tracker is not None:
            tracker.outcome(scores, "submit")
            tracker.close()
    return SubmitResult(
        path,
        scores,
        record,
        sorted(embed.skipped),
        _notes(config, scores, estimate, landmarks, fusion_note, verification),
        fell_back={m.replaces: m.fell_back for m in models if m.replaces and m.fell_back},
        landmarks=landmarks,
        fused=fusion is not None,
    )
