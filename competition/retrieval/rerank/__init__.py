"""Re-rankings of the final ranking, one record each in RERANKINGS.

A re-ranking reads a nearest-neighbour graph of the query and gallery photos together
(graph.py: each photo's best others, the gallery's part cached) and each query's candidates, and
re-orders them. Its record says how wide a graph and how many candidates it reads, what memory
it holds beyond them (memory.py refuses one too large for the machine), runs, and describes
itself for the leaderboard. Its settings are PostProcess's fields named with its SETTINGS prefix.

A new re-ranking: its module here with its record, a line in RERANKINGS, its name in
settings/choices.ReRanking and its fields in settings/submit.PostProcess (and, for validation
to try it, a line in train/postprocess_choice.CANDIDATES).
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar, Protocol

import numpy as np

from competition.retrieval.rerank.diffusion import Diffusion
from competition.retrieval.rerank.graph import Neighbours
from competition.retrieval.rerank.reciprocal import KReciprocal
from competition.settings.submit import PostProcess


class ReRanking(Protocol):
    name: ClassVar[str]  # its --re-ranking choice
    SETTINGS: ClassVar[str]  # the prefix of its fields in PostProcess

    @property
    def width(self) -> int: ...  # neighbours it reads per photo

    def depth(self, k: int) -> int: ...  # candidates a query needs for its top k

    def held_per_photo(self) -> int: ...  # bytes it holds per photo beyond the graphs

    def run(
        self,
        rows: np.ndarray,
        graph: Neighbours,
        sources: np.ndarray,
        candidates: np.ndarray,
        k: int,
        gallery_from: int,
    ) -> tuple[np.ndarray, np.ndarray]: ...  # (scores, ranking) of each source's top k, larger = better

    def describe(self) -> str: ...


RERANKINGS: dict[str, type[ReRanking]] = {kind.name: kind for kind in (KReciprocal, Diffusion)}


def re_ranking_of(steps: PostProcess) -> ReRanking | None:
    """The re-ranking `steps` ask for, with its settings (None: no re-ranking)."""
    kind = RERANKINGS.get(steps.re_ranking)
    if kind is None:
        return None
    return kind(**{field.name: getattr(steps, kind.SETTINGS + field.name) for field in fields(kind)})
