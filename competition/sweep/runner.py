"""Run a sweep: each configuration trains and submits as a manual run would, resumably.

- Work is shared through the caches the commands already keep: an augmented set per
  (data folder, recipe, target) under runs/sweeps/augmented/; pooled features of a frozen backbone
  (runs/feature-cache/) and its query/gallery embeddings (runs/embedding-cache/) for every
  last-layer configuration with the same backbone, weights, pooling and input size,
  whatever its head, loss or epochs. Full-layer runs share only the augmented set.
- Every finished (configuration, submit variant) is one line in results.jsonl; re-running
  skips those, resumes an interrupted full-layer run from its last.pt, and retries the ones
  that failed (their reason is one line in the table meanwhile).
- The estimate is a forward-pass throughput measured here per backbone and input size,
  times the photos each configuration must push through it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from competition.augment.generate import augment_competition
from competition.augment.recipes import load_recipe
from competition.data.discover import discover_competition
from competition.device import autocast_for, pick_device
from competition.errors import CompeteError
from competition.io import (
    PNG_SIGNATURE,
    atomic_write_text,
    exclusive_use,
    file_lock,
    json_text,
    may_replace,
    read_jsonl,
)
from competition.models.embedder import build_embedder
from competition.models.view import model_view
from competition.runs import can_resume, discard_unjudged, features_cache, is_finished
from competition.settings.model import ModelSettings
from competition.submit.models import view_of
from competition.submit.run import submit
from competition.sweep.plan import Configuration, SubmitVariant, SweepPlan
from competition.sweep.results import results_chart, results_table
from competition.train.loop import train

log = logging.getLogger(__name__)

RESULTS_TITLE = "# Sweep "  # results.md begins so: a file a later run may replace

FULL_PASS_COST = 3.0  # a training step (forward + backward) costs about three forwards
WISE_FT_POOL_PASSES = 6


@dataclass
class SweepReport:
    outcomes: list[dict]
    table: str
    out_dir: Path
    stopped_early: str = ""  # why the sweep stopped before the end, if it did
    estimates: dict[str, float] = field(default_factory=dict)


def measure_throughput(model: ModelSettings, device: torch.device, batch: int = 8, precision: str = "auto") -> float:
    """Images per second through the model's backbone at its view on this machine (random weights: the
    same cost), in the precision and memory layout embedding uses there. CUDA runs asynchronously: the
    clock stops when the GPU has finished, not when the work was queued."""
    model = model.model_copy(update={"pretrained": False})
    embedder, _ = build_embedder(model)
    embedder.to(device).eval()
    size = model_view(model).size
    images = torch.rand(batch, 3, size, size, device=device)
    if device.type == "cuda":
        embedder.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast_for(device, precision):
        embedder.pooled(images)  # warm-up
        finished(device)
        started = time.perf_counter()
        embedder.pooled(images)
        finished(device)
    return batch / max(time.perf_counter() - started, 1e-6)


def finished(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_seconds(plan: SweepPlan, device: torch.device, finished: set[str] = frozenset()) -> dict[str, float]:
    """Seconds each configuration should take here, counting what an earlier one already cached
    (by the caches' own key, runs.features_cache); a finished configuration costs 0 and its
    backbone is not probed."""
    found = discover_competition(plan.file.data, need_train=any(c.trained for c in plan.configurations))
    photos, unlabeled = len(found.train), len(found.query) + len(found.gallery)
    submits = [plan.submit_config(["x"], variant, "x") for variant in plan.variants]
    throughput: dict[Path, float] = {}
    cached: set[Path] = set()  # pooled features of a frozen backbone (runs/feature-cache)
    estimates = {}
    for configuration in plan.configurations:
        config = plan.train_config(configuration) if configuration.trained else None
        model = config.model if config else submits[0].off_the_shelf_model(configuration.backbone)
        origin = f"{model.pretrained}|{model.weights_file}"  # the weights load_pretrained will find
        own = model_view(model)
        views = {view_of(model, submit) for submit in submits}
        work = {}  # cache -> photos through the backbone to fill it
        if configuration.regime == "last":
            work[features_cache(plan.file.runs_dir, model, origin, own)] = photos
        if configuration.regime != "full":  # query and gallery through the frozen backbone
            work |= {features_cache(plan.file.runs_dir, model, origin, view): unlabeled * view.passes for view in views}
        images = sum(count for key, count in work.items() if key not in cached)
        cached.update(work)
        if configuration.id in finished:  # nothing left to do, and what it cached serves the others
            estimates[configuration.id] = 0.0
            continue
        if config is not None and configuration.regime == "full":
            trained = photos * (plan.file.augment_target / 10 if configuration.augment != "none" else 1)
            pool = photos / config.folds
            images += config.epochs * (trained * FULL_PASS_COST + pool) + WISE_FT_POOL_PASSES * pool
            images += unlabeled * sum(view.passes for view in views)
        speed = features_cache(plan.file.runs_dir, model, origin, own)
        if speed not in throughput:
            try:
                throughput[speed] = measure_throughput(model, device)
            except Exception as error:  # an unknown or unbuildable backbone: it will fail and say why
                log.debug("no throughput for %s: %s", model.backbone, error)
                throughput[speed] = float("nan")
        estimates[configuration.id] = images / throughput[speed]
    return estimates


def _append(path: Path, outcome: dict) -> None:
    with file_lock(path.with_suffix(".lock")):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json_text(outcome) + "\n")


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


def describe_outcome(outcome: dict) -> str:
    if outcome["status"] == "done":
        top1 = outcome["scores"].get("top1", float("nan"))
        return f"  {outcome['label']} · {outcome['variant']}: top-1 {top1:.3f} in {outcome['seconds']:.0f} s"
    return f"  {outcome['label']} · {outcome['variant']}: failed: {outcome['reason']}"


def best_runs(outcomes: list[dict], variant: str, top: int) -> list[dict]:
    """The `top` trained runs that kept their training (a run that fell back is its backbone),
    ranked by `variant`'s top-1 then mAP@10."""
    kept = [
        o
        for o in outcomes
        if o["status"] == "done"
        and o["variant"] == variant
        and o["regime"] in ("last", "full")
        and not o.get("fallback")
    ]
    return sorted(kept, key=lambda o: (o["scores"].get("top1", 0), o["scores"].get("map@10", 0)), reverse=True)[:top]


def check_results_folder(out_dir: Path) -> None:
    """A sweep's out: may name a folder of the user's: only a sweep's own results are replaced."""
    for name, prefix in (("results.md", RESULTS_TITLE.encode()), ("results.png", PNG_SIGNATURE)):
        if not may_replace(out_dir / name, prefix):
            raise CompeteError(f"{out_dir / name} was not written by a sweep: not replaced; choose another out")


class SweepRunner:
    def __init__(self, plan: SweepPlan, progress: bool = True, echo: Callable[[str], None] = print):
        self.plan, self.progress, self.echo = plan, progress, echo
        self.results_file = plan.out_dir / "results.jsonl"

    # what has been done
    def _done(self) -> dict[tuple[str, str], dict]:
        return {(o["id"], o["variant"]): o for o in read_jsonl(self.results_file) if o["status"] == "done"}

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
                self._record(configuration, variant.name, "failed", started, reason=_one_line(error))
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
                outcomes.append(self._record(configuration, variant.name, "failed", began, reason=reason, **extra))
                continue
            seconds = round(train_seconds, 1)
            outcomes.append(
                self._record(configuration, variant.name, "done", began, train_seconds=seconds, **result, **extra)
            )
            train_seconds = 0.0
        return outcomes

    def _record(self, configuration: Configuration, variant: str, status: str, started: float, **extra) -> dict:
        seconds = time.time() - started + extra.get("train_seconds", 0.0)
        outcome = {
            "id": configuration.id,
            "label": configuration.label,
            "backbone": configuration.backbone,
            "regime": configuration.regime,
            "variant": variant,
            "status": status,
            "seconds": round(seconds, 1),
            "scores": {},
            **extra,
        }
        _append(self.results_file, outcome)
        self.echo(describe_outcome(outcome))
        return outcome

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
        done = self._done()
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
        outcomes, started, stopped = [], time.time(), ""
        with exclusive_use(plan.out_dir, "sweep"):
            for configuration in plan.configurations:
                if configuration.id in finished:
                    outcomes += [done[(configuration.id, v.name)] for v in plan.variants]
                    continue
                elapsed = time.time() - started
                estimate = estimates[configuration.id]
                if max_minutes and (
                    elapsed >= max_minutes * 60 or (not math.isnan(estimate) and elapsed + estimate > max_minutes * 60)
                ):
                    stopped = (
                        f"stopped before {configuration.id}: {elapsed / 60:.1f} of {max_minutes:g} min used, "
                        f"it needs ~{estimate / 60:.1f}; re-run to continue"
                    )
                    self.echo(stopped)
                    break
                self.echo(f"{configuration.label}")
                outcomes += self._run_configuration(configuration, done)
            if top > 1 and not stopped:
                outcomes += self._ensemble(outcomes, top, done)
            table = results_table(outcomes)
            title = f"{RESULTS_TITLE}{plan.file.name} on {plan.file.data}"
            atomic_write_text(plan.out_dir / "results.md", f"{title}\n\n{table}\n")
            if any(o["status"] == "done" for o in outcomes):
                results_chart(outcomes, plan.out_dir / "results.png")
        return SweepReport(outcomes, table, plan.out_dir, stopped, estimates)


def run_sweep(
    plan: SweepPlan,
    max_minutes: float = 0,
    ensemble_top: int | None = None,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    return SweepRunner(plan, progress, echo).run(max_minutes, ensemble_top, dry_run)
