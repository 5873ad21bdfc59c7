"""Run a sweep: each configuration trains and submits as a manual run would, resumably.

- Work is shared through the caches the commands already keep: an augmented set per
  (data folder, recipe, target) under runs/sweeps/augmented/; pooled features of a frozen backbone
  (runs/feature-cache/) and its query/gallery embeddings (runs/embedding-cache/) for every
  last-layer configuration with the same backbone, weights, pooling and input size,
  whatever its head, loss or epochs. Full-layer runs share only the augmented set.
- Every finished (configuration, submit variant) is one line in results.jsonl (sweep/outcomes.py); re-running
  skips those, resumes an interrupted full-layer run from its last.pt, and retries the ones
  that failed (their reason is one line in the table meanwhile).
- Before it starts, each configuration's time is estimated (sweep/estimate.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.device import pick_device
from competition.errors import CompeteError
from competition.io import (
    PNG_SIGNATURE,
    atomic_write_text,
    exclusive_use,
    may_replace,
)
from competition.runs import can_resume, discard_unjudged, is_finished
from competition.submit.run import submit
from competition.sweep.estimate import estimate_seconds
from competition.sweep.outcomes import ResultsFile, best_runs
from competition.sweep.plan import Configuration, SubmitVariant, SweepPlan
from competition.sweep.results import results_chart, results_table
from competition.train.loop import train

log = logging.getLogger(__name__)

RESULTS_TITLE = "# Sweep "  # results.md begins so: a file a later run may replace


@dataclass
class SweepReport:
    outcomes: list[dict]
    table: str
    out_dir: Path
    stopped_early: str = ""  # why the sweep stopped before the end, if it did
    estimates: dict[str, float] = field(default_factory=dict)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if not isinstance(error, CompeteError) else text


def augmented_folder(plan: SweepPlan, configuration: Configuration, progress: bool) -> str:
    """A configuration's augmented set, made once per data folder, recipe and target ("" for none)."""
    if configuration.augment == "none":
        return ""
    recipe = load_recipe(configuration.augment, target_per_class=plan.file.augment_target)
    folder = f"{Path(plan.file.data).resolve().name}-{Path(recipe.name).stem}-{recipe.target_per_class}"
    out = Path(plan.file.runs_dir) / "sweeps" / "augmented" / folder
    augment_competition(plan.file.data, recipe, out, progress=progress, replace_if_changed=True)
    return str(out)


def check_results_folder(out_dir: Path) -> None:
    """A sweep's out: may name a folder of the user's: only a sweep's own results are replaced."""
    for name, prefix in (("results.md", RESULTS_TITLE.encode()), ("results.png", PNG_SIGNATURE)):
        if not may_replace(out_dir / name, prefix):
            raise CompeteError(f"{out_dir / name} was not written by a sweep: not replaced; choose another out")


class SweepRunner:
    def __init__(self, plan: SweepPlan, progress: bool = True, echo: Callable[[str], None] = print):
        self.plan, self.progress, self.echo = plan, progress, echo
        self.results = ResultsFile(plan.out_dir / "results.jsonl", echo)

    # the steps of one configuration
    def _train(self, configuration: Configuration) -> str:
        """The run folder of a configuration, trained (or resumed) if it is not finished."""
        config = self.plan.train_config(configuration, augmented_folder(self.plan, configuration, self.progress))
        folder = Path(config.runs_dir) / config.run_name
        if is_finished(folder):
            return str(folder)
        discard_unjudged(folder)
        train(config, resume=can_resume(folder), progress=self.progress)
        return str(folder)

    def _submit(self, models: list[str], variant: SubmitVariant, name: str) -> dict:
        result = submit(self.plan.submit_config(models, variant, name), progress=self.progress)
        if result.scores is None:
            raise CompeteError(
                f"{self.plan.file.data} has no labels.csv for every query and gallery photo: nothing to score"
            )
        return {
            "scores": result.scores,
            "submission": str(result.path),
            "fallback": next(iter(result.fell_back.values()), ""),
            "landmarks": result.record.get("landmarks", ""),  # as the leaderboard says it (auto's estimate too)
            "fused": result.fused,
        }

    def _run_configuration(self, configuration: Configuration, done: dict) -> list[dict]:
        started = time.time()
        try:
            model = self._train(configuration) if configuration.trained else configuration.backbone
        except (Exception, SystemExit) as error:
            return [
                self.results.record(configuration, variant.name, "failed", started, reason=_one_line(error))
                for variant in self.plan.variants
            ]
        return self._submit_variants(
            configuration, [model], done, self.plan.run_name(configuration), time.time() - started, model=model
        )

    def _submit_variants(
        self, configuration: Configuration, models: list[str], done: dict, prefix: str, train_seconds=0.0, **extra
    ) -> list[dict]:
        """Submit `models` with every variant not done yet: one outcome per variant (training's
        seconds counted once, with the first)."""
        outcomes = []
        for variant in self.plan.variants:
            if (configuration.id, variant.name) in done:
                outcomes.append(done[(configuration.id, variant.name)])
                continue
            began = time.time()
            try:
                result = self._submit(models, variant, f"{prefix}-{variant.name}")
            except Exception as error:
                reason = _one_line(error)
                outcomes.append(
                    self.results.record(configuration, variant.name, "failed", began, reason=reason, **extra)
                )
                continue
            seconds = round(train_seconds, 1)
            outcomes.append(
                self.results.record(
                    configuration, variant.name, "done", began, train_seconds=seconds, **result, **extra
                )
            )
            train_seconds = 0.0
        return outcomes

    def _ensemble(self, outcomes: list[dict], top: int, done: dict) -> list[dict]:
        """The `top` best trained runs that kept their training (a run that fell back is its
        backbone), ranked by the first variant's top-1 then mAP@10, fused and submitted with
        every variant."""
        chosen = best_runs(outcomes, self.plan.variants[0].name, top)
        if len(chosen) < 2:
            self.echo("no ensemble: fewer than 2 trained runs kept their training")
            return []
        ensemble = Configuration(
            "ensemble-" + "-".join(o["id"] for o in chosen), "+".join(o["backbone"] for o in chosen), "ensemble"
        )
        label = f"ensemble of the {len(chosen)} best runs: " + " + ".join(o["label"] for o in chosen)
        return self._submit_variants(
            ensemble, [o["model"] for o in chosen], done, f"{self.plan.file.name}-ensemble", label=label
        )

    def run(self, max_minutes: float = 0, ensemble_top: int | None = None, dry_run: bool = False) -> SweepReport:
        plan = self.plan
        top = plan.file.ensemble_top if ensemble_top is None else ensemble_top
        device = pick_device(None)
        done = self.results.done()
        finished = {c.id for c in plan.configurations if all((c.id, v.name) in done for v in plan.variants)}
        estimates = estimate_seconds(plan, device, finished)
        for configuration in plan.configurations:
            state = "done" if configuration.id in finished else f"~{estimates[configuration.id] / 60:.1f} min"
            self.echo(f"{configuration.id:<40} {configuration.label}: {state}")
        remaining = sum(e for e in estimates.values() if not math.isnan(e))
        self.echo(
            f"estimate: {remaining / 60:.1f} min for what is left on {device.type} (measured throughput; "
            f"cached features and embeddings counted once)"
        )
        if dry_run:
            return SweepReport([], "", plan.out_dir, "dry run", estimates)
        check_results_folder(plan.out_dir)
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_use(plan.out_dir, "sweep"):
            outcomes, stopped = self._configurations(finished, done, estimates, max_minutes)
            if top > 1 and not stopped:
                outcomes += self._ensemble(outcomes, top, done)
            table = write_results(plan, outcomes)
        return SweepReport(outcomes, table, plan.out_dir, stopped, estimates)

    def _configurations(self, finished: set[str], done: dict, estimates: dict, max_minutes: float):
        """(outcomes, why it stopped early or ""): every configuration in turn, those finished
        read back, until the next one would not fit in `max_minutes` (0: no limit)."""
        outcomes, started = [], time.time()
        for configuration in self.plan.configurations:
            if configuration.id in finished:
                outcomes += [done[(configuration.id, v.name)] for v in self.plan.variants]
                continue
            elapsed, estimate = time.time() - started, estimates[configuration.id]
            if _out_of_time(elapsed, estimate, max_minutes):
                stopped = (
                    f"stopped before {configuration.id}: {elapsed / 60:.1f} of {max_minutes:g} min used, "
                    f"it needs ~{estimate / 60:.1f}; re-run to continue"
                )
                self.echo(stopped)
                return outcomes, stopped
            self.echo(f"{configuration.label}")
            outcomes += self._run_configuration(configuration, done)
        return outcomes, ""


def _out_of_time(elapsed: float, estimate: float, max_minutes: float) -> bool:
    """Whether a configuration estimated at `estimate` s may not start after `elapsed` s (NaN: unknown)."""
    if not max_minutes:
        return False
    return elapsed >= max_minutes * 60 or (not math.isnan(estimate) and elapsed + estimate > max_minutes * 60)


def write_results(plan: SweepPlan, outcomes: list[dict]) -> str:
    """results.md (the table, returned) and results.png beside it."""
    table = results_table(outcomes)
    title = f"{RESULTS_TITLE}{plan.file.name} on {plan.file.data}"
    atomic_write_text(plan.out_dir / "results.md", f"{title}\n\n{table}\n")
    if any(o["status"] == "done" for o in outcomes):
        results_chart(outcomes, plan.out_dir / "results.png")
    return table


def run_sweep(
    plan: SweepPlan,
    max_minutes: float = 0,
    ensemble_top: int | None = None,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    return SweepRunner(plan, progress, echo).run(max_minutes, ensemble_top, dry_run)
