"""Whether a re-ranking fits this machine, judged before any work: an estimate of what it holds
at its peak against the machine's memory."""

from __future__ import annotations

import os

from competition.errors import CompeteError
from competition.retrieval.posteriors import FUSION_CANDIDATES
from competition.retrieval.rerank import re_ranking_of
from competition.retrieval.rerank.graph import GRAPH_K
from competition.settings.submit import PostProcess


def rerank_bytes(steps: PostProcess, queries: int, gallery: int) -> int:
    """What re-ranking holds at its peak, by estimate: the gallery's and the joint graph (12 bytes a
    neighbour), each query's candidates, and what the re-ranking itself holds per photo."""
    re_ranking = re_ranking_of(steps)
    if re_ranking is None:
        return 0
    graphs = 2 * 12 * max(re_ranking.width, GRAPH_K)
    candidates = queries * re_ranking.depth(FUSION_CANDIDATES) * 12
    return (queries + gallery) * (graphs + re_ranking.held_per_photo()) + candidates


def machine_memory() -> int:
    """This machine's memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def too_large(steps: PostProcess, queries: int, gallery: int) -> str:
    """Why the re-ranking of `steps` cannot run on this machine ("" if it can)."""
    needed, memory = rerank_bytes(steps, queries, gallery), machine_memory()
    if memory and needed > memory:
        return (
            f"{steps.re_ranking} re-ranking of {queries:,} queries and {gallery:,} gallery photos needs "
            f"~{needed / 1e9:.0f} GB by estimate, and this machine has {memory / 1e9:.0f} GB"
        )
    return ""


def check_size(steps: PostProcess, queries: int, gallery: int) -> None:
    """Refuse, before any work, a re-ranking too large to run (see too_large)."""
    if reason := too_large(steps, queries, gallery):
        raise CompeteError(f"{reason}; use --qe / --dba, which find neighbours with faiss")
