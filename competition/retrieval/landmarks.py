"""Which kind of competition it is: are the queries' landmarks those of `train/`?

- known: every query shows a training landmark (closed set, the 50-class competitions):
  class posteriors are fused into the ranking and validation holds out photos only.
- new: no query does (Google Landmarks retrieval): the labels never reach the ranking.
- mixed: some do: today's conservative pipeline, judged on held-out landmarks too.
- auto: estimated from the queries. A classifier's top posterior tells a photo of a
  training landmark from another's; on the validation folds (where the truth is known)
  a threshold on it has a true-positive rate `tpr` and a false-positive rate `fpr`. Of
  the queries a share `r` passes it, so the share of training landmarks among them is
  (r - fpr) / (tpr - fpr) (the classic correction of an imperfect test's count).

On a mixed set the labels help only the queries of training landmarks, and cost the others
dearly when fused into every ranking. A `KnownGate` tells them apart one photo at a time: a
logistic model over two signs of a training landmark (the classifier's top posterior and the
cosine to the nearest class prototype, the mean embedding of a landmark's training photos),
fitted on the folds' held-out photos, gives P(known | photo); the fusion weight of a pair is
then scaled by both photos' probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from competition.evaluate.metrics import bootstrap_interval
from competition.io import counted

KNOWN_FROM = 0.85  # estimated share of queries of training landmarks from which `auto` picks known
NEW_UNTIL = 0.15  # ... and up to which it picks new
MIN_SEPARATION = 0.2  # tpr - fpr below this: the test cannot tell, auto stays mixed


@dataclass(frozen=True)
class KnownShare:
    """The estimated share of queries whose landmark is in train/, its 90% interval, the choice."""

    share: float | None  # None: the calibration cannot tell
    low: float | None
    high: float | None
    choice: str
    queries: int
    why_not: str = "no calibration to estimate the query mix from"  # when share is None

    def short(self) -> str:
        return "" if self.share is None else f", {self.share:.0%} known"

    def describe(self) -> str:
        if self.share is None:
            return f"auto -> {self.choice} (cannot tell: {self.why_not})"
        return (
            f"auto -> {self.choice}: an estimated {self.share:.0%} of the {counted(self.queries, 'query')} "
            f"(90% [{self.low:.0%}, {self.high:.0%}]) show training landmarks "
            f"(known from {KNOWN_FROM:.0%}, new up to {NEW_UNTIL:.0%})"
        )


@dataclass(frozen=True)
class KnownGate:
    """P(photo shows a training landmark), logistic in its gate features (see the module)."""

    coef: tuple[float, ...]
    intercept: float
    auc: float  # how well it separated held-out photos of training landmarks from others, on the folds

    def probability(self, features: np.ndarray) -> np.ndarray:
        logits = np.asarray(features, np.float64) @ np.asarray(self.coef) + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).astype(np.float32)

    def to_payload(self) -> dict:
        return {"coef": [float(c) for c in self.coef], "intercept": float(self.intercept), "auc": float(self.auc)}

    @classmethod
    def from_payload(cls, payload: dict | None) -> "KnownGate | None":
        if not payload:
            return None
        return cls(tuple(float(c) for c in payload["coef"]), float(payload["intercept"]), float(payload["auc"]))


def fit_known_gate(features: np.ndarray, is_known: np.ndarray) -> KnownGate | None:
    """The gate fitted on photos whose truth is known (None when they are all of one kind)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    is_known = np.asarray(is_known, bool)
    if is_known.all() or not is_known.any():
        return None
    model = LogisticRegression(C=100.0, max_iter=1000).fit(features, is_known)
    auc = roc_auc_score(is_known, model.decision_function(features))
    return KnownGate(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), float(auc))


def calibrate_known(top_posteriors: np.ndarray, is_known: np.ndarray) -> dict:
    """The threshold on the top posterior that best separates photos of training landmarks
    (is_known) from others (Youden's J), with its true and false positive rates."""
    top_posteriors, is_known = np.asarray(top_posteriors, float), np.asarray(is_known, bool)
    if is_known.all() or not is_known.any():
        return {}
    candidates = np.unique(top_posteriors)
    separation = _passing(top_posteriors[is_known], candidates) - _passing(top_posteriors[~is_known], candidates)
    threshold = float(candidates[int(np.argmax(separation))])
    return {
        "threshold": threshold,
        "tpr": float((top_posteriors[is_known] >= threshold).mean()),
        "fpr": float((top_posteriors[~is_known] >= threshold).mean()),
        "photos": int(len(is_known)),
    }


def _passing(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The share of `scores` at or above each threshold, by one sort (a pass over the scores per
    threshold was quadratic: 400k validation photos, minutes)."""
    return (len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")) / len(scores)


def _corrected(pass_rate: float, tpr: float, fpr: float) -> float:
    """The share of training landmarks behind a pass rate of an imperfect test."""
    return float(np.clip((pass_rate - fpr) / (tpr - fpr), 0.0, 1.0))


def estimate_known_share(top_posteriors: np.ndarray, calibration: dict, seed: int = 0) -> KnownShare:
    top_posteriors = np.asarray(top_posteriors, float)
    queries = len(top_posteriors)
    if not calibration or not queries:
        return KnownShare(None, None, None, "mixed", queries)
    if calibration["tpr"] - calibration["fpr"] < MIN_SEPARATION:
        why_not = f"on validation the test told training landmarks from others too weakly (< {MIN_SEPARATION:.0%})"
        return KnownShare(None, None, None, "mixed", queries, why_not)
    tpr, fpr = calibration["tpr"], calibration["fpr"]
    passing = (top_posteriors >= calibration["threshold"]).astype(float)
    rates = bootstrap_interval(passing, seed=seed)
    # Fewer pass than photos of no training landmark did: the calibration does not describe these
    # queries (a model that embeds them otherwise than validation did). More than its training
    # landmarks' photos did is what a closed set shows: the run's classifier is fitted on every
    # photo, validation's on folds, so it is surer of its landmarks' photos: all known.
    if rates[1] < fpr:
        why_not = (
            f"{passing.mean():.0%} of the queries pass the training-landmark test, fewer than the "
            f"{fpr:.0%} of photos of other landmarks did on validation"
        )
        return KnownShare(None, None, None, "mixed", queries, why_not)
    share = _corrected(float(passing.mean()), tpr, fpr)
    low, high = (_corrected(bound, tpr, fpr) for bound in rates)
    choice = "known" if share >= KNOWN_FROM else "new" if share <= NEW_UNTIL else "mixed"
    return KnownShare(share, low, high, choice, queries)
