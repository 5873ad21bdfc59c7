"""The last-layer regime: a head on cached features of the frozen backbone.

Each validation fold fits the head on its training photos and scores its pool; the
final head is fitted on every photo. The learned whitening is fitted in closed form on
the original photos (measured on real photos, augmented variants describe the wrong
within-landmark variation and lowered retrieval); the loss heads train a linear
projection on originals and variants for the number of epochs the folds score best.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from competition.io import counted
from competition.models.projection import make_projection, project_rows
from competition.progress import steps
from competition.settings.choices import PAIR_LOSSES
from competition.train.label_fusion import fit_label_fusion
from competition.train.losses import loss_for
from competition.train.optim import make_optimizer, optimizer_step
from competition.train.photo_features import PhotoFeatures
from competition.train.postprocess_choice import choose_postprocess
from competition.train.run import Run, seed_epoch
from competition.train.sampling import epoch_order
from competition.train.validation import PoolScores, compare, map_scores, objective
from competition.train.whitening import FittedWhitening

log = logging.getLogger(__name__)


def fit_last_layer(run: Run, started: float) -> dict:
    run.folder.path.mkdir(parents=True, exist_ok=True)
    run.write_config()
    data = run.data
    # the whitening is fitted on the original photos: their variants need no features
    records = data.photos + data.extra if run.config.head_resolved == "whitening" else data.training_records()
    features = run.pretrained_features(records, "features")
    baseline = run.baseline(features, data.folds)
    # each fold's head fitted once: validation, the label fusion's gate and the post-processing choice share it
    if run.config.head_resolved == "whitening":
        head_for = _once_per_fold(_whitening_head_for(run, features))
        history, scores, extra = _fit_whitening(run, features, head_for)
    else:
        history, scores, extra = _fit_loss_head(run, features)
        head_for = _once_per_fold(_loss_head_for(run, features, extra["best_epoch"]))
    comparison = compare(scores, baseline, seed=run.config.seed)
    run.folder.write_history(history, baseline.means())
    run.embedder.eval()
    photos = features.stacked(data.photos)  # the matrix itself, usually: 1.58M photos are not copied
    fusion, classifier = {}, None
    if run.config.landmarks != "new":  # new: the labels never reach the ranking
        fusion, classifier = _fit_label_fusion(run, features, photos, head_for)
        log.info("label fusion: strength and weight chosen on %s", counted(len(data.closed_folds), "fold"))
    pools = [(head_for(fold.train)(photos[fold.pool]), fold) for fold in data.folds]
    postprocess = choose_postprocess(pools, data.labels, run.config.seed)
    log.info("post-processing chosen on %s: %s", counted(len(pools), "fold"), postprocess.get("chosen", "none"))
    run.save_best(extra.get("best_epoch", 0), scores.means(), label_classifier=classifier)
    return run.summary(
        started, comparison, baseline, scores.means(), label_fusion=fusion, postprocess=postprocess, **extra
    )


def _fit_label_fusion(run: Run, features: PhotoFeatures, photos: np.ndarray, head_for) -> tuple[dict, dict]:
    """The run's label classifier (train/label_fusion.py) and what closed-set validation said of it."""
    data = run.data
    summary, classifier = fit_label_fusion(
        photos,
        data.labels,
        data.closed_folds,
        data.mixed_folds,
        head_for,
        lambda vectors: _project(run.embedder.projection, vectors, run.device),
        run.baseline(features, data.closed_folds),
        run.config.seed,
        run.progress,
        run.device,
    )
    return summary, classifier.to_payload()


def _once_per_fold(head_for):
    """head_for, each fold's head fitted once (the heads are seeded, so a second fit is the same)."""
    heads = {}

    def cached(train: np.ndarray):
        key = np.asarray(train).tobytes()
        if key not in heads:
            heads[key] = head_for(train)
        return heads[key]

    return cached


def _whitening_head_for(run: Run, features: PhotoFeatures, extra: list | None = None):
    """The learned whitening fitted on a fold's training photos (and `extra` photos)."""

    def head_for(train: np.ndarray) -> FittedWhitening:
        rows, labels = features.rows([run.data.photos[i] for i in train] + (extra or []))
        return FittedWhitening.fit(rows, labels, run.config.whiten_power)

    return head_for


def _loss_head_for(run: Run, features: PhotoFeatures, epochs: int):
    """For label fusion's folds: the projection trained on a fold's photos (and their variants)."""

    def head_for(train: np.ndarray):
        x, y = features.rows(run.data.training_records(train))
        projection, _ = train_projection(run, torch.from_numpy(x.whole()).to(run.device), y, epochs)
        return lambda vectors: _project(projection, vectors, run.device)

    return head_for


def _fit_whitening(run: Run, features: PhotoFeatures, head_for) -> tuple[list[dict], PoolScores, dict]:
    """Each fold's whitening scored on its pool, then the run's fitted on every photo. Pseudo-labelled
    photos (`data.extra`) join every fit here; the label fusion's folds (head_for) fit without them."""
    data = run.data
    fold_head = _whitening_head_for(run, features, data.extra) if data.extra else head_for
    per_fold, shrinkages = [], []
    for number, fold in enumerate(data.folds, 1):
        head = fold_head(fold.train)
        per_fold.append(run.score(head(run.pool_features(features, fold)), fold))
        shrinkages.append(head.shrinkage)
        log.info("fold %d/%d  whitening  %s", number, len(data.folds), map_scores(per_fold[-1].means()))
    scores = PoolScores.concat(per_fold)
    x, y = features.rows(data.photos + data.extra)
    final = FittedWhitening.fit(x, y, run.config.whiten_power)
    log.info("final whitening on %s", counted(len(x), "photo"))
    run.embedder.projection.set(final.mean, final.matrix)
    history = [{"epoch": 0, **scores.means()}]
    return (
        history,
        scores,
        {"whitening_shrinkage": round(final.shrinkage, 4), "fold_shrinkage": [round(s, 4) for s in shrinkages]},
    )


def train_projection(
    run: Run, x: torch.Tensor, labels: np.ndarray, epochs: int, after_epoch=None
) -> tuple[nn.Module, list[float]]:
    """A linear projection (and its loss head) trained on features; `after_epoch(projection,
    epoch, loss)` is called after each epoch. Seeded: the same inputs give the same projection."""
    config = run.config
    classes = sorted(set(labels.tolist()))
    y = torch.tensor([classes.index(label) for label in labels], device=run.device)
    torch.manual_seed(config.seed + 1)
    projection = make_projection("linear", x.shape[1], config.model.embedding_dim).to(run.device)
    criterion = loss_for(config, config.model.embedding_dim, len(classes)).to(run.device)
    per_class = config.samples_per_class if config.head_resolved in PAIR_LOSSES else 1
    steps = max(1, len(epoch_order(y.cpu().numpy(), per_class, config.seed, 0)) // config.batch_size)
    trainable = list(projection.parameters()) + list(criterion.parameters())
    optimizer, scheduler = make_optimizer(config, [{"params": trainable}], steps)
    losses = []
    for epoch in range(epochs):
        seed_epoch(config.seed, epoch)
        projection.train()
        criterion.train()
        order = torch.from_numpy(epoch_order(y.cpu().numpy(), per_class, config.seed, epoch))
        batch_losses = []
        for batch in torch.split(order, config.batch_size)[:steps]:
            batch = batch.to(run.device)
            loss = criterion(projection(x[batch]), y[batch])
            optimizer_step(loss, optimizer, scheduler, trainable, config.grad_clip)
            batch_losses.append(loss.item())
        losses.append(float(np.mean(batch_losses)))
        projection.eval()
        if after_epoch is not None:
            after_epoch(projection, epoch, losses[-1])
    return projection, losses


def _project(projection: nn.Module, vectors: np.ndarray, device) -> np.ndarray:
    return project_rows(projection, vectors, device)


def _fit_loss_head(run: Run, features: PhotoFeatures) -> tuple[list[dict], PoolScores, dict]:
    """Every fold trains for all epochs and is scored after each; the epoch count with the best
    validation over all folds is then trained on every photo."""
    data, config = run.data, run.config
    per_epoch: list[list[PoolScores]] = [[] for _ in range(config.epochs)]
    fold_losses = []
    for number, fold in enumerate(steps(data.folds, "validation folds", enabled=run.progress), 1):
        x, y = features.rows(data.training_records(fold.train))
        x, pool = x.whole(), run.pool_features(features, fold)

        def score_epoch(projection, epoch, loss, pool=pool, fold=fold, number=number):
            per_epoch[epoch].append(run.score(_project(projection, pool, run.device), fold))
            # one line per epoch where no progress bar shows (piped, nohup, CI)
            where = f"fold {number}/{len(data.folds)}  epoch {epoch + 1}/{config.epochs}"
            log.info("%s  loss %.3f  %s", where, loss, map_scores(per_epoch[epoch][-1].means()))

        _, losses = train_projection(run, torch.from_numpy(x).to(run.device), y, config.epochs, score_epoch)
        fold_losses.append(losses)
    epoch_scores = [PoolScores.concat(parts) for parts in per_epoch]
    history = [
        {"epoch": e + 1, "loss": float(np.mean([losses[e] for losses in fold_losses])), **s.means()}
        for e, s in enumerate(epoch_scores)
    ]
    best = int(np.argmax([objective(s.means()) for s in epoch_scores]))
    started = time.time()
    x, y = features.rows(data.training_records())
    x = x.whole()
    projection, _ = train_projection(run, torch.from_numpy(x).to(run.device), y, best + 1)
    run.embedder.projection.load_state_dict(projection.state_dict())
    log.info("final projection: %d epochs on %d photos in %.1fs", best + 1, len(x), time.time() - started)
    return history, epoch_scores[best], {"best_epoch": best + 1, "epochs_run": config.epochs}
