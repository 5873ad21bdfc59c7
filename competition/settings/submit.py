"""Everything that defines a submission: `compete submit`'s flags, its `--config` keys, a sweep's
`submit:` variants and a leaderboard row's `settings`."""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import model_validator

from competition.io import check_plain_name, counted
from competition.settings.base import Settings, setting
from competition.settings.choices import (
    Format,
    GalleryWhitening,
    IfWorse,
    Index,
    Landmarks,
    LogTo,
    ReRanking,
)
from competition.settings.embedding import EmbeddingConfig
from competition.settings.train import (
    LANDMARKS_HELP,
    LOG_TO_HELP,
)


class PostProcess(Settings):
    """The post-processing steps, in the order they run (retrieval/postprocess.py runs them)."""

    WHAT: ClassVar[str] = "submit setting"
    PANEL: ClassVar[str] = "Post-processing"
    OLD_NAMES: ClassVar[dict[str, str]] = {
        "whiten": "pca_whiten",
        "whiten_dim": "pca_whiten_dim",
        "whiten_power": "pca_whiten_power",
    }

    pca_whiten: GalleryWhitening = setting(
        "off", "PCA-whitening learned on the unlabeled gallery or query+gallery photos.", old_flags=("--whiten",)
    )
    pca_whiten_dim: int = setting(
        0, "PCA-whitened dimensions (0 = as many as the data allow).", ge=0, old_flags=("--whiten-dim",), le=8192
    )
    # 0.5 (square-root): full whitening learned on a few hundred photos blows up noise
    # directions; measured on the embedded set, 1.0 halved top-1 and 0.5 added 5 points.
    pca_whiten_power: float = setting(
        0.5,
        "Divide each PCA component by eigenvalue**(power/2): 1 = full whitening, 0.5 = square-root (safer on "
        "small galleries).",
        gt=0,
        old_flags=("--whiten-power",),
        le=2,
    )
    dba: int = setting(0, "Database-side augmentation: gallery neighbours averaged in (0 = off; try 2).", ge=0, le=1000)
    qe: int = setting(
        0, "α-query expansion: gallery neighbours averaged into each query (0 = off; try 2).", ge=0, le=1000
    )
    alpha: float = setting(3.0, "Neighbour weight = similarity ** alpha, for DBA and QE.", ge=0, le=100)
    re_ranking: ReRanking = setting(
        "off",
        "Re-rank the final ranking on the sparse nearest-neighbour graph of query + gallery photos: "
        "k-reciprocal (Zhong et al.) or diffusion (a random walk, Iscen et al.).",
        old_switches={"--rerank": "k-reciprocal", "--diffusion": "diffusion"},
    )
    # k1 about 1.5x the photos one landmark has in query + gallery: realdev has ~6 (494 photos, 81
    # landmarks), where k1=8 k2=3 lifted the ensemble's mAP@10 0.654 -> 0.756 and k1=20 lost.
    rerank_k1: int = setting(
        8,
        "Re-ranking neighbourhood: about 1.5x the photos one landmark has in query + gallery (8 for ~6, as on "
        "realdev).",
        ge=1,
        le=1000,
    )
    rerank_k2: int = setting(3, "Re-ranking local expansion (about k1 / 3).", ge=1, le=1000)
    # a walk through ~5 photos of a landmark: the Oxford/Paris settings (50, 0.99) leave it on galleries this thin
    diffusion_k: int = setting(10, "Diffusion graph: mutual nearest neighbours per photo.", ge=1, le=1000)
    diffusion_alpha: float = setting(
        0.9, "Diffusion: the walk's chance to go on at each step (vs restart).", gt=0, lt=1
    )
    diffusion_gamma: float = setting(3.0, "Diffusion: edge weight = similarity ** gamma.", gt=0, le=100)
    diffusion_truncate: int = setting(
        1000, "Diffusion: each query's walk stays on its N nearest gallery photos.", ge=1, le=100_000
    )
    from_run: bool = setting(
        True,
        "When no step above is given: the steps chosen by the validation of the first run that chose some (none, "
        "α-QE, DBA + α-QE, k-reciprocal or diffusion, scored on its held-out photos; its summary says which; runs "
        "older than v0.4 chose none).",
    )

    def given(self) -> bool:
        """Whether any step is on (else a run's choice may apply)."""
        return self.pca_whiten != "off" or bool(self.dba or self.qe) or self.re_ranking != "off"

    def embedding_described(self) -> list[str]:
        """The steps before the re-ranking as the leaderboard shows them (retrieval/postprocess.describe
        adds the re-ranking)."""
        steps = []
        if self.pca_whiten != "off":
            steps.append(
                f"PCA-whiten({self.pca_whiten}{f', {self.pca_whiten_dim}-d' if self.pca_whiten_dim else ''}"
                f", power {self.pca_whiten_power:g})"
            )
        if self.dba:
            steps.append(f"DBA k={self.dba}")
        if self.qe:
            steps.append(f"α-QE k={self.qe} α={self.alpha:g}")
        return steps


SUBMIT_PANELS = {  # `--help` panel -> its settings
    "Model": (
        "model", "ensemble_weights", "if_worse", "with_pretrained", "image_size", "resize", "flip", "scales",
    ),
    "Data": ("data", "landmarks", "strict"),
    "Search": ("k", "index", "nprobe", "index_factory", "verify"),
    "Output": ("name", "format", "map_k", "submissions_dir", "leaderboard", "runs_dir", "log_to"),
    "Machine": ("batch_size", "device", "workers", "precision", "compile"),
}  # fmt: skip


class SubmitConfig(EmbeddingConfig):
    WHAT: ClassVar[str] = "submit setting"
    # the names of v0.2's config files and leaderboard rows
    OLD_NAMES: ClassVar[dict[str, str]] = {"models": "model", "weights": "ensemble_weights", "fmt": "format"}

    PANELS: ClassVar[dict[str, tuple[str, ...]]] = SUBMIT_PANELS
    ensemble_weights: list[float] | None = setting(
        None, "Weight of each --model in the ensemble, e.g. 1,0.5 (none = equal).", old_flags=("--weights",)
    )
    name: str = setting(
        "", "Submission name (file submissions/<name>.csv; default: the models and the time).", metavar="NAME"
    )
    k: int = setting(
        0,
        "Gallery images per query (0: 100 for --format kaggle, its limit, else 10).",
        flags=("-k",),
        aliases=("--k",),
        ge=0,
        le=10_000,
    )
    map_k: int = setting(
        0,
        "Local mAP@k next to mAP@10 (0: 100 for --format kaggle, as the Google Landmark Retrieval competitions score).",
        ge=0,
        le=10_000,
    )
    format: Format = setting(
        "csv",
        "csv (query,rank_1..rank_k), kaggle (id,images: ids without extension, space-separated, as Google "
        "Landmark Retrieval wants), json, or recognition (id,landmarks: one landmark of train/ and a "
        "confidence per query, as Google Landmark Recognition wants; scored by GAP).",
    )
    submissions_dir: str = setting("submissions", "Where submission files go.", path="dir")
    leaderboard: str = setting("leaderboard.md", "Leaderboard to record the scored run in.", path="file")
    # Fallback by default: on realdev an ensemble with a run that lost still lost to the backbone
    # alone (0.816 vs 0.845 top-1).
    if_worse: IfWorse = setting(
        "fallback",
        "A run that did worse than its pretrained backbone in validation (on held-out landmarks; for "
        "--landmarks known, on held-out photos of its own), or could not tell: fallback (backbone only), "
        "ensemble (with the backbone, 1:1) or keep (which also submits a run still training as it is; the "
        "others refuse it).",
    )
    with_pretrained: float = setting(
        0.0,
        "Add each run's pretrained backbone to the ensemble at this weight (0 = off): guards unseen landmarks.",
        ge=0,
        le=1e6,
    )
    postprocess: PostProcess = PostProcess()
    index: Index = setting(
        "auto",
        "exact, ivf, ivfpq (compressed codes, for galleries too big for memory), hnsw, or auto (IVF for 100k+ "
        "gallery images and under 1,000 queries; exact search of many queries is faster); an approximate index "
        "reports its recall against exact.",
    )
    nprobe: int = setting(
        0,
        "IVF indexes (--index ivf, ivfpq, or a factory string with IVF): gallery cells each query probes; more is "
        "slower and nearer exact (0: 1/16 of the cells, more for a deep -k). Recall against exact is reported.",
        ge=0,
        le=1_000_000,
    )
    index_factory: str = setting(
        "",
        "For experts: a faiss index_factory string (e.g. OPQ64,IVF4096,PQ64) over the L2-normalised gallery, "
        "trained on a sample of it; replaces --index.",
        max_length=200,  # faiss's parser crashes (not errs) on strings of tens of thousands of characters
    )
    landmarks: Landmarks = setting("auto", LANDMARKS_HELP)
    verify: int = setting(
        0,
        "Geometric verification: re-rank each query's first N gallery photos by SIFT keypoints that one "
        "homography explains (MAGSAC), added to the global score; cached, about 1.3 s a query at N=100 on 2 "
        "CPU cores; 0: off.",
        ge=0,
        le=10_000,
    )
    log_to: LogTo = setting("", f"Also send the submission's scores to {LOG_TO_HELP}", show_default=False)

    @model_validator(mode="after")
    def _consistent(self) -> SubmitConfig:
        if self.name:
            check_plain_name(self.name, "--name", "--submissions-dir")
        weights = self.ensemble_weights
        if weights is not None:
            if len(weights) != len(self.model):
                raise ValueError(f"{counted(len(weights), 'ensemble weight')} for {counted(len(self.model), 'model')}")
            if not all(math.isfinite(w) for w in weights) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"ensemble weights must be finite, >= 0 and not all 0, not {weights}")
        return self
