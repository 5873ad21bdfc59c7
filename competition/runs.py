"""Runs and caches on disk, below training (which writes them) and submit (which reads them).
Nothing else spells a run file's name or a cache's key.

A run folder: config.json (its settings), best.pt (what submit loads: embedder settings and
weights), last.pt (the whole training state for --resume), summary.json (its validation
verdicts: written last, so a run is finished when it is there), metrics.csv and curves.png.
Reading a checkpoint is models/checkpoint.py's job; this module imports no torch.

Caches under runs/: pooled features of a frozen pretrained backbone (`features_cache`,
one key whoever computes them: train's last regime or submit's off-the-shelf and last-layer
models), the embeddings of a trained model (`trained_embeddings_cache`), local features for
verification, galleries' nearest-neighbour graphs for re-ranking (`graph_cache`, keyed by the
vectors' content) and each submission's final vectors (`embeddings_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from competition.errors import CompeteError
from competition.io import fingerprint
from competition.settings.model import ModelSettings, View

BEST = "best.pt"
LAST = "last.pt"
CONFIG = "config.json"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
CURVES = "curves.png"
WISE_FT = "wise_ft.csv"  # the full regime's interpolation, scored per alpha


class Verdict(str, Enum):
    """Validation's verdict on one group of held-out photos, as summary.json keeps it."""

    BETTER = "better"  # the paired 90% interval of the mAP@10 difference lies above 0
    WORSE = "worse"  # below 0
    UNCLEAR = "no clear difference"  # across 0
    TOO_FEW = "too few photos to tell"  # fewer queries than validation needs: training could not be judged
    UNJUDGED = ""  # none recorded

    def __str__(self) -> str:  # shown as the words, as summary.json keeps them (not "Verdict.BETTER")
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, text: object) -> Verdict:
        """A recorded verdict; one this version does not know counts as none."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNJUDGED


@dataclass(frozen=True)
class Judgement:
    """What validation said of a run on one kind of query, against its pretrained backbone."""

    beats: bool | None = None  # the measured difference's sign; None: too few to tell, or not recorded
    verdict: Verdict = Verdict.UNJUDGED

    @property
    def untold(self) -> bool:
        """Too few photos to tell: a run judged so is no more trusted than one that lost."""
        return self.verdict is Verdict.TOO_FEW

    @classmethod
    def of(cls, group: dict) -> Judgement:
        """From validation's comparison of one group (or the record's copy of it)."""
        beats = group.get("beats")
        return cls(beats if isinstance(beats, bool) else None, Verdict.of(group.get("verdict")))

    def to_dict(self) -> dict:
        return {"beats": self.beats, "verdict": self.verdict.value}


@dataclass(frozen=True)
class RunRecord:
    """What a run is and what its validation said: built once by training, kept as summary.json's
    "record" and read back by attributes (submit's guard and leaderboard, `describe`). The rest
    of the summary is the report people read: scores, intervals, grids.

    Summaries of every version load: v0.2's kept only `beats_pretrained`, v0.3 added the label
    fusion's own verdicts, v0.4 the chosen steps, v0.5 this record. Before v0.5 the weights'
    origin and the augmentation were in config.json only: "" here, and the loader reads them there."""

    regime: str = ""  # full | last; off-the-shelf for a backbone that is no run
    head: str = ""  # the head it trained (config.json's head_resolved)
    landmarks: str = ""  # the queries validation modelled: mixed | known | new | auto
    weights_origin: str = ""  # where its pretrained backbone's weights came from
    augmentation: str = ""  # the recipe it trained on, as `name×photos per class`, or none
    classifier: str = ""  # its label classifier's kind; "" none
    unseen: Judgement = Judgement()  # on landmarks held out whole
    known: Judgement = Judgement()  # on held-out photos of training landmarks, its label fusion included
    postprocess: dict | None = None  # the steps its validation chose, as PostProcess settings

    def to_dict(self) -> dict:
        facts = {name: getattr(self, name) for name in RECORDED_TEXT}
        return facts | {"unseen": self.unseen.to_dict(), "known": self.known.to_dict(), "postprocess": self.postprocess}

    @classmethod
    def from_summary(cls, summary: dict, where: Path) -> RunRecord:
        if "record" in summary:
            return cls._from_record(section(summary, "record", where), where)
        return cls._from_older_summary(summary, where)

    @classmethod
    def _from_record(cls, record: dict, where: Path) -> RunRecord:
        for name in RECORDED_TEXT:
            if not isinstance(record.get(name, ""), str):
                raise CompeteError(f"{where}: the record's '{name}' must be text; train the run again")
        return cls(
            **{name: record.get(name, "") for name in RECORDED_TEXT},
            unseen=Judgement.of(section(record, "unseen", where)),
            known=Judgement.of(section(record, "known", where)),
            postprocess=section(record, "postprocess", where) or None,
        )

    @classmethod
    def _from_older_summary(cls, summary: dict, where: Path) -> RunRecord:
        """v0.2-v0.4: the facts scattered over the summary, verdicts beside signs."""
        validation, beats = section(summary, "validation", where), section(summary, "beats_pretrained", where)
        fusion = section(summary, "label_fusion", where)
        # closed-set verdict: the run with its label fusion, else the run alone, on seen landmarks
        known = section(section(fusion, "validation", where) or validation, "seen", where)
        return cls(
            regime=str(summary.get("regime", "")),
            head=str(summary.get("head_resolved", "")),
            landmarks=str(summary.get("landmarks", "")),
            classifier=str(fusion.get("classifier", "")),
            unseen=Judgement(beats.get("unseen"), Verdict.of(section(validation, "unseen", where).get("verdict"))),
            known=Judgement(known.get("beats", beats.get("seen")), Verdict.of(known.get("verdict"))),
            postprocess=section(section(summary, "postprocess", where), "steps", where) or None,
        )


RECORDED_TEXT = ("regime", "head", "landmarks", "weights_origin", "augmentation", "classifier")


def features_cache(runs_dir: str | Path, model: ModelSettings, weights_origin: str, view: View) -> Path:
    """The pooled features of a pretrained backbone at a view, whoever computes them (train or
    submit): one key for the model's settings that shape them and its weights' origin."""
    tag = fingerprint([weights_origin, *model.features_identity()])[:8]
    name = f"{model.backbone}-{tag}-{model.pooling}{model.gem_p:g}-{view.tag}.store"
    return Path(runs_dir) / "feature-cache" / name


def trained_embeddings_cache(runs_dir: str | Path, run_dir: Path, view: View) -> Path:
    """A trained run's embeddings, keyed by its best.pt: a retrained run never reuses old vectors."""
    stat = (run_dir / BEST).stat()
    version = fingerprint([str(stat.st_size), str(stat.st_mtime_ns)])
    return Path(runs_dir) / "embedding-cache" / f"{run_dir.name}-{version}-{view.tag}.store"


def local_features_cache(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "local-feature-cache"


def graph_cache(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "graph-cache"


def embeddings_file(runs_dir: str | Path, submission_name: str) -> Path:
    """Where a submission's final query/gallery vectors are kept, for `compete report`."""
    return Path(runs_dir) / "submission-embeddings" / f"{submission_name}.npz"


def is_run(path: str | Path) -> bool:
    """A folder holding a checkpoint submit can load (finished or not)."""
    return (Path(path) / BEST).is_file()


def is_finished(path: str | Path) -> bool:
    """summary.json is written last: a run with it and its best.pt has finished."""
    return (Path(path) / SUMMARY).is_file() and is_run(path)


def can_resume(path: str | Path) -> bool:
    return (Path(path) / LAST).is_file()


def discard_unjudged(path: str | Path) -> None:
    """The best.pt of a run that was killed between it and summary.json and keeps no training
    state: no validation judged it, so training starts again rather than submit trusting it."""
    if not is_finished(path) and not can_resume(path):
        (Path(path) / BEST).unlink(missing_ok=True)


def read_run_file(path: Path) -> dict | None:
    """A run's JSON object (summary.json, config.json), None when absent; a damaged or hand-edited
    file is one line naming it, never a traceback."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CompeteError(f"{path}: damaged ({error}); train the run again or restore the file") from error
    if not isinstance(data, dict):
        raise CompeteError(f"{path}: holds {type(data).__name__}, not the run's JSON object; train the run again")
    return data


def section(data: dict, key: str, path: Path) -> dict:
    """A nested object of a run file ({} when absent); any other type is one line naming the field."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CompeteError(f"{path}: '{key}' must be an object, not {type(value).__name__}; train the run again")
    return value


def read_summary(run_dir: str | Path) -> dict | None:
    """A run's validation verdicts, None while it is unfinished."""
    return read_run_file(Path(run_dir) / SUMMARY)


def read_config(run_dir: str | Path) -> dict | None:
    """A run's settings as it saved them (config.json), None when it has none."""
    return read_run_file(Path(run_dir) / CONFIG)


def run_settings(run: str | Path, runs_dir: str | Path = "runs") -> dict | None:
    """The config.json of a run given as a folder or a name under runs_dir, finished or not."""
    found = (read_config(c) for c in (Path(run), Path(runs_dir) / str(run)))
    return next((config for config in found if config is not None), None)


def find_run(run: str | Path, runs_dir: str | Path = "runs") -> Path | None:
    """A run given as a folder path or as a name inside runs_dir, when it is one."""
    return next((c for c in (Path(run), Path(runs_dir) / str(run)) if is_run(c)), None)


def resolve_run_dir(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run given as a folder path or as a name inside runs_dir."""
    found = find_run(run, runs_dir)
    if found:
        return found
    for candidate in (Path(run), Path(runs_dir) / str(run)):
        if candidate.is_dir():
            how = (  # a last-layer run keeps no training state to resume
                f"resume it with `compete train --resume {candidate}`"
                if can_resume(candidate)
                else "train it again (a last-layer run takes seconds on cached features)"
            )
            raise CompeteError(f"{candidate}: run has no {BEST} (training unfinished or interrupted?); {how}")
    raise CompeteError(f"run '{run}' not found (looked for {Path(run)} and {Path(runs_dir) / str(run)})")
