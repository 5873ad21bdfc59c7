"""The named choices of settings, declared here once. The library modules take their names from
these (`get_args`), so `--help`, completion, the checks and the code can never disagree."""

from __future__ import annotations

from typing import Literal, get_args

Regime = Literal["last", "full"]  # last: frozen backbone, cached features; full: all layers train
Loss = Literal["softmax", "arcface", "cosface", "subcenter-arcface", "triplet", "contrastive"]
# auto: learned whitening in the last regime, softmax in the full one
Head = Literal["auto", "whitening", Loss]
TripletMining = Literal["hard", "semihard", "all"]
# rmac: regional max (R-MAC); cls: a transformer's class token; vlad: NetVLAD, learned (full regime)
Pooling = Literal["gem", "avg", "max", "rmac", "cls", "vlad"]  # each a builder in models/pooling.POOLINGS
LEARNED_POOLINGS = frozenset({"vlad"})  # fitted to a run's photos and learned with its backbone (tested there)
Resize = Literal["aspect", "square"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Landmarks = Literal["auto", "known", "new", "mixed"]
Format = Literal["csv", "kaggle", "json", "recognition"]
Index = Literal["auto", "exact", "ivf", "ivfpq", "hnsw"]
IfWorse = Literal["fallback", "ensemble", "keep"]
GalleryWhitening = Literal["off", "gallery", "query+gallery"]
ReRanking = Literal["off", "k-reciprocal", "diffusion"]  # each but off a record in retrieval/rerank/
LogTo = Literal["", "tensorboard", "mlflow", "wandb"]  # "": the leaderboard only

LOSSES = get_args(Loss)
PAIR_LOSSES = ("triplet", "contrastive")  # no classifier: batches need several photos of a landmark
TRIPLET_MINING = get_args(TripletMining)
POOLING_NAMES = get_args(Pooling)
RESIZE_MODES = get_args(Resize)
PRECISIONS = get_args(Precision)
FORMATS = get_args(Format)
INDEXES = get_args(Index)
IF_WORSE = get_args(IfWorse)
