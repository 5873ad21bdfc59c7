"""The post-processing a run's validation chooses for submit: none, α-QE, DBA + α-QE, k-reciprocal
or diffusion.

Re-ranking is worth most where a landmark has several gallery photos, and costs where it
has one or two; which holds for a competition is what validation pools show. Each fold's
pool (its held-out photos, every one querying the others, the pool its own gallery) is
ranked after each candidate in CANDIDATES: the standard settings of the field, and for
diffusion a small grid. The winner must raise mAP@10 over all pool queries by PLATEAU or
more, its paired interval above 0 (90% shared among the candidates), and keep both top-1
over all queries and mAP@10 on queries of held-out landmarks within PLATEAU of no
post-processing; of those, the best mean mAP@10 wins.
Submit uses it unless told otherwise (`--no-from-run`, or any step given).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from competition.evaluate.metrics import bootstrap_interval
from competition.retrieval.postprocess import POOL_MAX, describe, pool_ranking
from competition.settings.submit import PostProcess
from competition.train.folds import Fold
from competition.train.validation import MAP_K, PoolScores, pool_queries, score_ranked

# the field's usual settings (k1=8, k2=3: about 1.5x the photos a landmark has in query + gallery); diffusion's
# depend on how many photos a landmark has, where the textbook ones lose (retrieval/rerank/diffusion.py): a small grid
CANDIDATES = (
    PostProcess(),
    PostProcess(qe=2),
    PostProcess(dba=2, qe=2),
    PostProcess(re_ranking="k-reciprocal"),
    *(
        PostProcess(re_ranking="diffusion", diffusion_k=neighbours, diffusion_alpha=alpha)
        for neighbours in (5, 10, 20)
        for alpha in (0.8, 0.95)
    ),
)
PLATEAU = 0.01  # what a step must gain in mAP@10, and may cost top-1 or mAP@10 on queries of held-out landmarks
# the interval a winner's gain must clear: 90% shared among the candidates (Bonferroni), since on pools of
# pure noise one of nine candidates cleared a plain 90% interval for half the seeds
SURE = 1 - 0.1 / (len(CANDIDATES) - 1)


def _scores(steps: PostProcess, pools: Sequence[tuple[np.ndarray, Fold]], labels: np.ndarray) -> PoolScores:
    parts = []
    for vectors, fold in pools:
        queries = pool_queries(labels[fold.pool], most=len(fold.pool))
        ranking = pool_ranking(steps, vectors, queries, MAP_K)
        parts.append(score_ranked(ranking, queries, labels[fold.pool], fold.unseen))
    return PoolScores.concat(parts)


def _difference(scores: PoolScores, base: PoolScores, mask: np.ndarray, attribute: str, seed: int) -> list[float]:
    delta = getattr(scores, attribute)[mask].astype(float) - getattr(base, attribute)[mask]
    return [round(float(delta.mean()), 4), *(round(b, 4) for b in bootstrap_interval(delta, seed=seed))]


def choose_postprocess(pools: Sequence[tuple[np.ndarray, Fold]], labels: np.ndarray, seed: int = 0) -> dict:
    """What the folds' pools (each: its photos' vectors, the fold) say of each candidate, and the
    one chosen (see the module); {} when the pools are too large to rank densely (POOL_MAX)."""
    labels = np.asarray(labels)
    if not pools or max(len(fold.pool) for _, fold in pools) > POOL_MAX:
        return {}
    scores = {describe(steps): _scores(steps, pools, labels) for steps in CANDIDATES}
    base = scores["none"]
    everyone = np.ones(len(base.ap), bool)
    grid = {
        name: {
            f"map@{MAP_K}": _difference(s, base, everyone, "ap", seed),
            "top1": _difference(s, base, everyone, "top1", seed),
            f"unseen_map@{MAP_K}": _difference(s, base, s.unseen, "ap", seed) if s.unseen.any() else None,
        }
        for name, s in scores.items()
    }

    def wins(name: str) -> bool:
        gain, top1, unseen = (grid[name][key] for key in (f"map@{MAP_K}", "top1", f"unseen_map@{MAP_K}"))
        sure = bootstrap_interval(scores[name].ap - base.ap, level=SURE, seed=seed)[0] > 0
        return sure and gain[0] >= PLATEAU and top1[0] >= -PLATEAU and (unseen is None or unseen[0] >= -PLATEAU)

    winners = [steps for steps in CANDIDATES[1:] if wins(describe(steps))]
    chosen = max(winners, key=lambda steps: grid[describe(steps)][f"map@{MAP_K}"][0], default=CANDIDATES[0])
    return {
        "chosen": describe(chosen),
        "steps": chosen.to_dict(),
        "queries": int(len(base.ap)),
        f"none_map@{MAP_K}": round(float(base.ap.mean()), 4),
        "against_none": grid,  # each candidate's mean difference and 90% interval, per query
    }
