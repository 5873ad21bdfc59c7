"""From models to a scored submission: embed, fuse, rank, write, score, record.

A model is either a trained run (folder or name under runs/) or a backbone name for
off-the-shelf features (pretrained backbone + GeM, no training).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from competition.data.checks import leaked_photos
from competition.data.dataset import RESIZE_MODES, scaled_sizes
from competition.data.discover import discover_competition
from competition.distributed import init_distributed
from competition.errors import CompeteError
from competition.evaluate.leaderboard import add_record
from competition.evaluate.metrics import score_by_group
from competition.evaluate.scoring import flatten_scores
from competition.evaluate.submission import FORMATS, KAGGLE_MAX_IMAGES, check_unique_ids, ranked_names, write_submission
from competition.evaluate.validate import validate_submission
from competition.io import atomic_path, check_plain_name, exclusive_use, fingerprint
from competition.models.embedder import EmbedderConfig, build_embedder
from competition.models.pooling import POOLINGS
from competition.models.registry import REGISTRY, get_spec
from competition.retrieval.embed import PRECISIONS, compiled, extract_features, pick_device
from competition.retrieval.ensemble import fuse_concat
from competition.retrieval.landmarks import LANDMARKS, KnownShare, estimate_known_share
from competition.retrieval.posteriors import LabelClassifier, fuse_for_search
from competition.retrieval.postprocess import PostProcess
from competition.retrieval.search import INDEXES, recall_against_exact, resolve_index
from competition.retrieval.verify import Verification, verify_ranking
from competition.runs import BEST, LAST, TOO_FEW, embeddings_file, load_run_embedder, resolve_run_dir

log = logging.getLogger(__name__)


@dataclass
class SubmitConfig:
    data: str = "data/sample"
    models: list[str] = field(default_factory=lambda: ["efficientnet_lite0"])
    weights: list[float] | None = None
    name: str = ""
    k: int = 0  # gallery photos per query; 0: 100 for the kaggle format (its limit, scored by mAP@100), else 10
    map_k: int = 0  # local mAP@k next to mAP@10; 0: 100 for the kaggle format, else 10
    # Mirrored photo averaged in: measured on real photos (realdev), mAP@10 +2 points off the
    # shelf and in held-out validation, for twice the embedding time.
    flip: bool = True
    scales: list[float] = field(default_factory=lambda: [1.0])
    image_size: int = 0  # 0: each model's own view size
    resize: str = ""  # square (whole photo squashed) or aspect (longer side = size); "": each model's own
    pooling: str = "gem"  # for off-the-shelf backbones; a trained run keeps its own
    weights_file: str = ""  # ImageNet weights for off-the-shelf backbones with none cached (no network)
    fmt: str = "csv"
    submissions_dir: str = "submissions"
    leaderboard: str = "leaderboard.md"
    runs_dir: str = "runs"
    batch_size: int = 32
    device: str = ""  # cpu, cuda, cuda:1, mps; "" = CUDA when present
    workers: int = -1  # image-loading processes; 0: in the main process; -1: by the cores and device
    strict: bool = False
    # A run that did worse than its pretrained backbone on held-out landmarks during training, or
    # whose validation had too few photos to tell: use the backbone instead, ensemble the two
    # (1:1), or keep the run. Fallback by default: on realdev an ensemble with a run that lost
    # still lost to the backbone alone (0.816 vs 0.845 top-1).
    if_worse: str = "fallback"
    with_pretrained: float = 0.0  # > 0: add each run's pretrained backbone to the ensemble at this weight
    postprocess: PostProcess = field(default_factory=PostProcess)
    index: str = "auto"  # exact, ivf, hnsw; auto: IVF from APPROXIMATE_FROM gallery images
    # known: every query shows a landmark of train/ (runs' class posteriors fused into the ranking);
    # new: none does (labels never used); mixed: some do; auto: estimated from the queries.
    landmarks: str = "auto"
    # Geometric verification (retrieval/verify.py): each query's first `verify` gallery photos
    # re-ranked by SIFT inliers added to the global score; 0: off.
    verify: int = 0
    precision: str = "auto"  # CUDA autocast: auto (bf16 where supported, else fp16), fp32, bf16, fp16; CPU: fp32
    compile: bool = False  # torch.compile the models (CUDA; a no-op with a note on CPU)

    @property
    def ranks(self) -> tuple[int, int]:
        """(k, map_k) with 0 resolved: 100 for the kaggle format (its limit), else 10."""
        default = KAGGLE_MAX_IMAGES if self.fmt == "kaggle" else 10
        return self.k or default, self.map_k or default

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SubmitConfig":
        """Settings from a file or flags: post-processing keys may be flat (as the flags are) or
        under `postprocess`; unknown keys are refused and every value is checked."""
        data = dict(data)
        post = dict(data.pop("postprocess", None) or {})
        post.update({key: data.pop(key) for key in list(data) if key in POSTPROCESS_KEYS})
        unknown = sorted(set(data) - {f.name for f in fields(cls)} | set(post) - POSTPROCESS_KEYS)
        if unknown:
            raise CompeteError(f"unknown submit setting(s): {unknown}")
        if isinstance(data.get("models"), str):
            data["models"] = [data["models"]]
        config = cls(**data, postprocess=PostProcess(**post))
        config.check()
        return config

    def check(self) -> None:
        """Every setting in range, with one line for the first that is not, before any work."""
        k, map_k = self.ranks
        if not self.models:
            raise CompeteError("no model given: a run folder/name or a backbone name (--model)")
        for name, value, low in (
            ("k", k, 1),
            ("map-k", map_k, 1),
            ("batch-size", self.batch_size, 1),
            ("workers", self.workers, -1),
            ("with-pretrained", self.with_pretrained, 0),
            ("verify", self.verify, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise CompeteError(f"--{name} must be a number >= {low}, not {value!r}")
        if self.name:
            check_plain_name(self.name, "--name", "--submissions-dir")
        if self.image_size < 0 or 0 < self.image_size < 32:
            raise CompeteError(f"--image-size must be 0 (each model's own) or at least 32, not {self.image_size}")
        for flag, value, allowed in (
            ("format", self.fmt, FORMATS),
            ("resize", self.resize, ("", *RESIZE_MODES)),
            ("if-worse", self.if_worse, IF_WORSE),
            ("index", self.index, INDEXES),
            ("pooling", self.pooling, POOLING_CHOICES),
            ("landmarks", self.landmarks, LANDMARKS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise CompeteError(f"--{flag} must be one of {', '.join(allowed)}, not '{value}'")
        if self.weights is not None:
            check_weights(list(self.weights), len(self.models))
        scaled_sizes(self.image_size or 224, self.scales)
        self.postprocess.check()


POSTPROCESS_KEYS = {f.name for f in fields(PostProcess)}
IF_WORSE = ("fallback", "ensemble", "keep")
FELL_BACK_LOST = "it lost in validation"  # why the guard replaced a run, as its note says
FELL_BACK_UNTOLD = "validation could not tell"
POOLING_CHOICES = tuple(POOLINGS)


@dataclass
class LoadedModel:
    label: str  # run name or backbone name
    backbone: str
    embedder: object
    image_size: int
    regime: str
    augmentation: str
    cache_tag: str  # what the cached vectors are: the pretrained pooled features when `frozen`
    embedder_config: EmbedderConfig
    beats_pretrained: bool | None = None  # on held-out landmarks during training; None: unknown / not a run
    validation: str = ""  # the run's verdict on held-out landmarks ("" when not a run or not recorded)
    # The backbone is the pretrained one (off-the-shelf, last regime): its pooled features are
    # cached once per backbone and shared by every such model; only the projection differs.
    frozen: bool = False
    classifier: LabelClassifier | None = None  # the run's label classifier (closed-set queries)
    beats_on_known: bool | None = None  # on held-out photos of training landmarks, its fusion included
    known_validation: str = ""


def pooled_cache_tag(backbone: str, weights_origin: str, config: EmbedderConfig) -> str:
    return f"{backbone}-pretrained-{fingerprint([weights_origin, config.pooling, str(config.gem_p)])[:8]}"


def _is_run(model: str, runs_dir: str) -> bool:
    return (Path(model) / BEST).is_file() or (Path(runs_dir) / model / BEST).is_file()


def pretrained_model(config: EmbedderConfig) -> LoadedModel:
    """Off-the-shelf features: the pretrained backbone and its pooling, no projection."""
    config = replace(config, projection="none", embedding_dim=0, pretrained=True)
    embedder, origin = build_embedder(config)
    embedder.eval()
    return LoadedModel(
        config.backbone,
        config.backbone,
        embedder,
        config.resolved_image_size(),
        "off-the-shelf",
        "none",
        pooled_cache_tag(config.backbone, origin, config),
        config,
        frozen=True,
    )


def _run_summary(run_dir: Path, use_unfinished: bool) -> dict:
    """A finished run's summary.json (its validation verdicts). A run without one is still
    training or was stopped: its best.pt is an in-progress checkpoint that no validation has
    judged, so it is refused unless the user keeps runs whatever validation says."""
    summary_file = run_dir / "summary.json"
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    how = (
        f"continue it with `compete train --resume {run_dir}`"
        if (run_dir / LAST).exists()
        else "train it again (a last-layer run takes seconds on cached features)"
    )
    if not use_unfinished:
        raise CompeteError(
            f"{run_dir}: the run is unfinished (no summary.json: still training, or stopped); {how}, "
            "or pass --if-worse keep to submit its best.pt as it is"
        )
    log.warning("%s: unfinished run, its best.pt used as it is (--if-worse keep); %s", run_dir, how)
    return {}


def load_model(
    model: str, runs_dir: str, pooling: str = "gem", use_unfinished: bool = False, weights_file: str = ""
) -> LoadedModel:
    if _is_run(model, runs_dir) or (model not in REGISTRY and Path(model).exists()):
        run_dir = resolve_run_dir(model, runs_dir)
        embedder, config = load_run_embedder(run_dir)
        stat = (run_dir / BEST).stat()
        summary = _run_summary(run_dir, use_unfinished)
        classifier = config.get("label_classifier")
        fusion = summary.get("label_fusion") or {}
        # closed-set verdict: the run with its label fusion, else the run alone, on seen landmarks
        known = (fusion.get("validation") or summary.get("validation", {})).get("seen", {})
        embedder_config = EmbedderConfig.from_dict(config["embedder_config"])
        frozen = config.get("regime") == "last" and "weights_origin" in config
        tag = (
            pooled_cache_tag(embedder_config.backbone, config["weights_origin"], embedder_config)
            if frozen
            else f"{run_dir.name}-{fingerprint([str(stat.st_size), str(stat.st_mtime_ns)])}"
        )
        return LoadedModel(
            run_dir.name,
            embedder_config.backbone,
            embedder,
            embedder_config.resolved_image_size(),
            config.get("regime", "?"),
            _augmentation_of(config),
            tag,
            embedder_config,
            summary.get("beats_pretrained", {}).get("unseen"),
            summary.get("validation", {}).get("unseen", {}).get("verdict", ""),
            frozen,
            LabelClassifier.from_payload(classifier) if classifier else None,
            known.get("beats"),
            known.get("verdict", ""),
        )
    get_spec(model)  # neither a run nor a known backbone: a clear error listing the backbones
    return pretrained_model(EmbedderConfig(backbone=model, pooling=pooling, weights_file=weights_file or None))


def check_weights(weights: list[float], models: int) -> None:
    """Ensemble weights must be finite, not negative, and not all zero (else NaN embeddings)."""
    if len(weights) != models:
        raise CompeteError(f"{len(weights)} weight(s) for {models} model(s)")
    if not all(np.isfinite(weights)) or min(weights) < 0 or sum(weights) <= 0:
        raise CompeteError(f"ensemble weights must be finite, >= 0 and not all 0, not {weights}")


def guard_unseen(
    models: list[LoadedModel], weights: list[float], if_worse: str, with_pretrained: float, landmarks: str = "mixed"
) -> tuple[list[LoadedModel], list[float], list[str]]:
    """Apply --if-worse and --with-pretrained; returns models, weights and what was done.

    Which validation judges a run depends on the queries: for `known` landmarks its verdict
    on held-out photos of training landmarks, otherwise on landmarks held out whole."""
    kept, kept_weights, notes = [], [], []
    for model, weight in zip(models, weights):
        beats, verdict, where = (
            (model.beats_on_known, model.known_validation, "held-out photos of its training landmarks")
            if landmarks == "known"
            else (model.beats_pretrained, model.validation, "held-out landmarks")
        )
        worse = beats is False or verdict == TOO_FEW
        if beats is False:
            log.warning("run %s did worse than its pretrained backbone on %s", model.label, where)
        elif worse:
            log.warning("run %s: too few photos to tell whether it helps on %s", model.label, where)
        if worse and if_worse == "fallback":
            kept += [pretrained_model(model.embedder_config)]
            kept_weights += [weight]
            reason = FELL_BACK_LOST if beats is False else FELL_BACK_UNTOLD
            notes.append(f"{model.label}: fell back to pretrained ({reason})")
            continue
        kept.append(model)
        kept_weights.append(weight)
        extra = 1.0 if worse and if_worse == "ensemble" else with_pretrained
        if extra > 0 and model.regime != "off-the-shelf":
            kept.append(pretrained_model(model.embedder_config))
            kept_weights.append(weight * extra)
            notes.append(f"{model.label} + pretrained×{extra:g}")
    return kept, kept_weights, notes


def _augmentation_of(run_config: dict) -> str:
    if not run_config.get("use_augmented", False) or run_config.get("head_resolved") == "whitening":
        return "none"  # the learned whitening is fitted on the original photos only
    folder = Path(run_config.get("augmented") or Path(run_config.get("data", "")) / "augmented")
    recipe_file = folder / "recipe.json"
    if recipe_file.exists():
        recorded = json.loads(recipe_file.read_text())
        recipe = recorded["recipe"]
        return f"{recipe['name']}×{recipe['target_per_class']}"
    return "none"


@dataclass
class SubmitResult:
    path: Path | None  # None on a torchrun rank other than 0, which only embedded its share
    scores: dict | None
    record: dict
    skipped: list[str] = field(default_factory=list)  # unreadable query/gallery files (zero vectors)
    notes: list[str] = field(default_factory=list)  # what submit decided for the user to read (the landmarks kind)


def view_of(model: LoadedModel, config: SubmitConfig) -> tuple[int, str]:
    """(size, resize) a model embeds at: its own view unless submit overrides it (`--resize
    square` alone: the model's own size for a square view, lite0's 224)."""
    resize = config.resize or model.embedder_config.resolved_resize()
    return config.image_size or replace(model.embedder_config, resize=resize).resolved_image_size(), resize


def _embed(model: LoadedModel, records, config: SubmitConfig, device, dist, progress: bool):
    """A model's vectors for query or gallery photos, through the embedding cache."""
    model.embedder.to(device)
    size, resize = view_of(model, config)
    tta = f"s{size}-f{int(config.flip)}-{'_'.join(map(str, config.scales))}-{resize}"
    cache = Path(config.runs_dir) / "embedding-cache" / f"{model.cache_tag}-{tta}.store"
    vectors, failed = extract_features(
        model.embedder.pooled if model.frozen else model.embedder,
        [r.path for r in records],
        size,
        device,
        cache_dir=cache,
        batch_size=config.batch_size,
        flip=config.flip,
        scales=config.scales,
        resize=resize,
        strict=config.strict,
        description=f"{model.label}: {records[0].split}",
        progress=progress,
        workers=config.workers,
        shards=dist,
        precision=config.precision,
    )
    if model.frozen:  # the run's own projection on the shared pooled features
        with torch.no_grad():
            vectors = model.embedder.projection(torch.from_numpy(vectors).to(device)).cpu().numpy()
    return vectors, failed


def resolve_landmarks(setting: str, models: list[LoadedModel], embed_queries) -> tuple[str, KnownShare | None]:
    """The kind of competition: as given, or for `auto` estimated from the queries' top class
    posteriors under the first run's calibration (retrieval/landmarks.py)."""
    if setting != "auto":
        return setting, None
    calibrated = [m for m in models if m.classifier is not None and m.classifier.calibration]
    if not calibrated:
        return "mixed", KnownShare(None, None, None, "mixed", 0)
    model = calibrated[0]
    top = model.classifier.posteriors(embed_queries(model)).max(axis=1)
    estimate = estimate_known_share(top, model.classifier.calibration)
    return estimate.choice, estimate


def fuse_label_posteriors(models, weights, query_vectors, gallery_vectors, queries, gallery):
    """For known landmarks: the runs' class posteriors (weighted like the ensemble) fused into the
    ranking vectors; returns them and a note of what was fused."""
    with_classifier = [i for i, m in enumerate(models) if m.classifier is not None]
    if not with_classifier:
        log.warning("--landmarks known: no model has a label classifier (train a last-layer run); ranking by cosine")
        return queries, gallery, "none (no run with a label classifier)"
    classes = models[with_classifier[0]].classifier.classes
    if any(models[i].classifier.classes != classes for i in with_classifier):
        log.warning("--landmarks known: the runs were trained on different landmarks; ranking by cosine")
        return queries, gallery, "none (runs of different landmarks)"
    total = sum(weights[i] for i in with_classifier)

    def averaged(of_run):  # over the runs with a classifier, by their ensemble weights
        return sum(weights[i] / total * of_run(i) for i in with_classifier)

    query_p = averaged(lambda i: models[i].classifier.posteriors(query_vectors[i]))
    gallery_p = averaged(lambda i: models[i].classifier.posteriors(gallery_vectors[i]))
    weight = float(averaged(lambda i: models[i].classifier.weight))
    fused_q, fused_g = fuse_for_search(queries, gallery, query_p, gallery_p, weight)
    return fused_q, fused_g, f"class posteriors of {len(with_classifier)} run(s), weight {weight:g}"


def save_ranked_vectors(path: Path, competition, queries: np.ndarray, gallery: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                query_names=np.array([r.name for r in competition.query]),
                queries=queries,
                gallery_names=np.array([r.name for r in competition.gallery]),
                gallery=gallery,
            )


def submission_path(config: SubmitConfig, name: str) -> Path:
    return Path(config.submissions_dir) / f"{name}.{'json' if config.fmt == 'json' else 'csv'}"


def submit(config: SubmitConfig, progress: bool = True) -> SubmitResult:
    """Embed, rank, write, validate, score and record one submission. A named submission is held
    by one process from start to end (a second `submit --name same` at once stops, naming the
    first), so one file and one leaderboard row describe the same ranking."""
    config.check()  # the name too, before it names a lock
    if config.name and init_distributed().is_main:
        locks = Path(config.runs_dir) / "submission-locks"  # not in submissions/, which users upload from
        with exclusive_use(submission_path(config, config.name), "submission", lock_dir=locks):
            return _submit(config, progress)
    return _submit(config, progress)


def _submit(config: SubmitConfig, progress: bool) -> SubmitResult:
    competition = discover_competition(config.data, need_train=False)
    if not competition.query or not competition.gallery:
        raise CompeteError(f"{config.data}: needs query/ and gallery/ images to make a submission")
    config.postprocess.check_size(len(competition.query) + len(competition.gallery))
    k, map_k = config.ranks
    for records, what in ((competition.query, "query"), (competition.gallery, "gallery")):
        check_unique_ids([r.name for r in records], config.fmt, what)
    leaked_photos(competition.train, competition.query + competition.gallery)
    # relative weights: scaled so the largest is 1 (1e308,1e308 would overflow float32 as it is)
    weights = [w / max(config.weights) for w in config.weights] if config.weights else [1.0] * len(config.models)
    dist = init_distributed()  # under torchrun every process embeds a share; rank 0 does the rest
    device = dist.device() or pick_device(config.device or None)
    models = [
        load_model(m, config.runs_dir, config.pooling, config.if_worse == "keep", config.weights_file)
        for m in config.models
    ]
    for model in models:  # the backbone: both the pooled features and the full embedding go through it
        model.embedder.backbone = compiled(model.embedder.backbone, device, config.compile)

    def embed(model: LoadedModel, records) -> np.ndarray:
        """Once per model and split: auto's estimate embeds the queries that the ranking reuses."""
        key = (id(model), records[0].split)
        if key not in embedded:
            vectors, failed = _embed(model, records, config, device, dist, progress)
            skipped.update(str(p) for p in failed)
            embedded[key] = (model, vectors)  # the model kept alive: its id is not reused by another
        return embedded[key][1]

    skipped: set[str] = set()
    embedded: dict[tuple[int, str], tuple[LoadedModel, np.ndarray]] = {}
    landmarks, estimate = resolve_landmarks(config.landmarks, models, lambda m: embed(m, competition.query))
    models, weights, guard_notes = guard_unseen(models, weights, config.if_worse, config.with_pretrained, landmarks)
    query_vectors = [embed(model, competition.query) for model in models]
    gallery_vectors = [embed(model, competition.gallery) for model in models]
    if not dist.is_main:
        return SubmitResult(None, None, {}, sorted(skipped))
    queries = fuse_concat(query_vectors, weights)
    gallery = fuse_concat(gallery_vectors, weights)
    index = resolve_index(config.index, len(gallery))
    queries, gallery = config.postprocess.vectors(queries, gallery, index)
    fusion_note = "off"
    if landmarks == "known":
        queries, gallery, fusion_note = fuse_label_posteriors(
            models, weights, query_vectors, gallery_vectors, queries, gallery
        )
    ranked_scores, ranking = config.postprocess.scored_ranking(queries, gallery, max(k, config.verify), index)
    if index != "exact":  # say what the approximation costs
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
            cache_dir=Path(config.runs_dir) / "local-feature-cache",
            progress=progress,
        )
        verification = f"SIFT + MAGSAC, top {cost['top']}, {cost['per_query_s']:.2f} s/query"
    ranking = ranking[:, :k]

    name = config.name or f"{'+'.join(m.label for m in models)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path = write_submission(
        submission_path(config, name),
        [r.name for r in competition.query],
        ranked_names(ranking, [r.name for r in competition.gallery]),
        config.fmt,
    )
    problems = validate_submission(
        path,
        [r.name for r in competition.query],
        [r.name for r in competition.gallery],
        min(k, len(competition.gallery)),
    )
    if problems:  # never score or record a file the competition would reject
        raise CompeteError(f"{path} was written but is not valid, so it was not scored: " + "; ".join(problems))
    save_ranked_vectors(embeddings_file(config.runs_dir, name), competition, queries, gallery)
    scores = None
    if competition.has_eval_labels:
        seen = set(competition.train_classes) or None
        scores = flatten_scores(
            score_by_group(
                ranking,
                [r.label for r in competition.query],
                [r.label for r in competition.gallery],
                seen_classes=seen,
                map_k=map_k,
            )
        )
    elif competition.has_partial_labels:
        log.warning(
            "labels.csv gives a class to %s; scoring needs every query and gallery photo, so this "
            "submission is not scored",
            competition.label_coverage(),
        )
    tta_parts = (
        (["flip"] if config.flip else [])
        + ([f"scales {','.join(map(str, config.scales))}"] if list(config.scales) != [1.0] else [])
        + sorted({f"{resize} {size}" for size, resize in (view_of(m, config) for m in models)})
    )
    record = {
        "name": name,
        "backbones": " + ".join(m.backbone for m in models),
        "regime": " + ".join(sorted({m.regime for m in models})),
        "augmentation": " + ".join(sorted({m.augmentation for m in models})),
        "tta": ", ".join(tta_parts) or "none",
        "postprocess": config.postprocess.describe(),
        "unseen_guard": "; ".join(guard_notes),
        "landmarks": landmarks if estimate is None else f"{landmarks} (auto{estimate.short()})",
        "label_fusion": fusion_note,
        "verification": verification,
        "index": index,
        "models": [m.label for m in models],
        "weights": weights,
        "submission": str(path),
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        **(scores or {}),
        "settings": config.to_dict(),  # all of them: a row is enough to make its submission again
    }
    if scores is not None:
        try:
            add_record(config.leaderboard, record)
        except (CompeteError, OSError) as error:  # the file and its row go together, or the user is told how
            reason = str(error) if isinstance(error, CompeteError) else (error.strerror or str(error))
            raise CompeteError(
                f"{path} is written and kept, but its leaderboard row could not be written ({reason}); record it "
                f"with `compete score {path} --data {config.data} --record --leaderboard {config.leaderboard}`"
            ) from error
    notes = [estimate.describe()] if estimate is not None else []
    if landmarks == "known":
        notes.append(f"landmarks known: {fusion_note}")
    if config.verify:
        notes.append(f"geometric verification: {verification}")
    return SubmitResult(path, scores, record, sorted(skipped), notes)
