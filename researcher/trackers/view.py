"""What a run becomes in an experiment tracker, in one place for every tracker: the run, a
candidate per iteration, a seed per trained seed, each with its parameters, tags, scalars and
per-epoch curves. Pure: records and artifact bytes in, plain structs out; the tracker modules
(mlflow_export.py, tensorboard_export.py) only write what this says."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, Literal

import msgspec
import yaml

from shared.messaging.messages import TERMINAL_STATUSES
from shared.registry.leaderboard import fidelity
from shared.registry.records import Evaluation, IterationRecord, RunRecord, SeedRow
from shared.registry.report import build_report, load_records, recipe_of
from shared.registry.store import Registry

# the tracker-neutral status; MLflow's RunStatus is its upper case
Status = Literal["running", "finished", "failed", "killed"]
CURVE_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm")
ARTIFACT_READS = 16  # artifact reads in flight at once while a view is loaded
TAG = "researcher."  # every tag this export sets starts so; researcher.run_id finds a run's export again


class SeedView(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    status: Status
    tags: dict[str, str]
    metrics: dict[str, float]  # its final scalars, as final/<metric>
    curves: dict[str, list[tuple[int, float]]]  # metric -> (epoch, value), epochs from 1
    started_at: float  # seconds since the epoch
    finished_at: float


class CandidateView(msgspec.Struct, frozen=True, kw_only=True):
    iteration: int
    name: str  # "c0003 SmallCNN"
    status: Status
    params: dict[str, str]  # the model config flattened (layers.0.type), recipe defaults filled in
    tags: dict[str, str]
    metrics: dict[str, float]  # <metric>/mean, /std, /ci_low, /ci_high, /n over its seeds
    seeds: list[SeedView]
    config_yaml: str
    code: bytes | None  # None: no code was kept (a config that could not be built)
    plots: dict[str, bytes]  # file name -> PNG
    started_at: float
    finished_at: float


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    name: str
    status: Status
    params: dict[str, str]  # the goal's settings
    tags: dict[str, str]
    metrics: dict[str, float]  # the test split's figures (test_accuracy/mean ...) and the best score
    series: dict[str, list[tuple[int, float]]]  # metric -> (iteration, value): each candidate's score
    candidates: list[CandidateView]
    report_json: str  # `researcher report --json`, for a tracker that keeps files
    started_at: float
    finished_at: float


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """{"layers": [{"type": "Conv2d"}], "lr": 0.01} -> {"layers.0.type": "Conv2d", "lr": "0.01"}:
    trackers hold parameters as flat text. An empty list or mapping stays a parameter ("[]")."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: value if isinstance(value, str) else json.dumps(value)}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def summary_metrics(evaluation: Evaluation | None) -> dict[str, float]:
    """Each aggregated metric's mean, std and 95% interval over seeds, and how many seeds."""
    out: dict[str, float] = {}
    for metric, s in (evaluation.aggregated if evaluation else {}).items():
        parts = {"mean": s.mean, "std": s.std, "n": s.n,
                 "ci_low": s.ci_95[0] if s.ci_95 else None, "ci_high": s.ci_95[1] if s.ci_95 else None}
        out |= {f"{metric}/{k}": float(v) for k, v in parts.items() if _finite(v)}
    return out


def _status_of_run(run: RunRecord) -> Status:
    return {"running": "running", "failed": "failed", "stopped": "killed"}.get(run.status, "finished")


def _joined(values: list[str | None]) -> str:
    return ",".join(sorted({v for v in values if v}))


def _seed_view(row: SeedRow, curve: list, prefix_tags: dict[str, str]) -> SeedView:
    curves: dict[str, list[tuple[int, float]]] = {}
    for point in curve:
        for field in CURVE_FIELDS:
            value = getattr(point, field)
            if _finite(value):
                curves.setdefault(field, []).append((point.epoch, float(value)))
    tags = {**prefix_tags, f"{TAG}role": "seed", f"{TAG}seed": str(row.seed), f"{TAG}device": row.device,
            f"{TAG}evaluator": row.evaluator, f"{TAG}runtime": row.runtime or "", f"{TAG}sandbox_image": row.image or ""}
    if not row.ok:
        tags[f"{TAG}reason"] = f"{row.reason or 'error'}: {row.error or ''}".strip(": ")
    metrics = {f"final/{k}": float(v) for k, v in row.metrics.items() if _finite(v)}
    if row.cost is not None:
        metrics |= {f"cost/{k}": float(v) for k, v in msgspec.structs.asdict(row.cost).items() if _finite(v)}
    metrics |= {"train_time_s": row.train_time_s, "samples_per_s": row.samples_per_s}
    return SeedView(seed=row.seed, status="finished" if row.ok else "failed", tags={k: v for k, v in tags.items() if v},
                    metrics=metrics, curves=curves, started_at=row.started_at or 0.0,
                    finished_at=(row.started_at or 0.0) + row.duration_s)


def _params(it: IterationRecord) -> dict[str, str]:
    params = flatten(it.model_config)
    recipe = recipe_of(it)
    if recipe is not None:  # the training settings it ran with, where its config left them to defaults
        for key, value in flatten(msgspec.to_builtins(recipe)).items():
            params.setdefault(key, value)
    return params


def candidate_view(run: RunRecord, it: IterationRecord, code: bytes | None, plots: dict[str, bytes]) -> CandidateView:
    ev, v = it.evaluation, it.validation
    rows = ev.seed_results if ev else []
    rejected = (v is not None and not v.ok) or it.state == "rejected"
    status: Status = ("failed" if rejected or (ev is not None and not any(r.ok for r in rows))
                      else ("running" if run.status not in TERMINAL_STATUSES else "killed") if it.in_flight
                      else "finished")
    tags = {f"{TAG}run_id": run.run_id, f"{TAG}role": "candidate", f"{TAG}iteration": str(it.iteration),
            f"{TAG}state": it.state, f"{TAG}proposer": it.proposer, f"{TAG}assembler": it.assembler,
            f"{TAG}class_name": it.class_name or str(it.model_config.get("class_name", "")),
            f"{TAG}fidelity": fidelity(it), f"{TAG}rung": "full" if it.rung is None else str(it.rung),
            f"{TAG}code_sha256": hashlib.sha256(code).hexdigest() if code else "",
            f"{TAG}device": _joined([r.device for r in rows]), f"{TAG}runtime": _joined([r.runtime for r in rows]),
            f"{TAG}sandbox_image": _joined([r.image for r in rows]),
            f"{TAG}validation_runtime": (v.runtime or "") if v else "",
            f"{TAG}best": "true" if it.iteration == run.best_iteration else ""}
    if rejected:
        tags[f"{TAG}reason"] = f"{v.reason or 'rejected'}: {v.error or ''}".strip(": ") if v else "rejected"
    elif status == "failed":
        tags[f"{TAG}reason"] = "every seed failed: " + "; ".join(f"seed {f.seed} {f.reason or 'error'}"
                                                                for f in (ev.failed_seeds if ev else []))
    if it.decision:
        tags[f"{TAG}decision"] = f"{it.decision.action}: {it.decision.reasoning}"
    metrics = summary_metrics(ev)
    metrics["compute_seed_epochs"] = float(it.compute())
    if it.finished_at is not None:  # seconds from its proposal to its decision, every rung included
        metrics["wall_time_s"] = round(it.finished_at - it.started_at, 3)
    if v is not None and v.param_count is not None:
        metrics["param_count"] = float(v.param_count)
    seed_tags = {f"{TAG}run_id": run.run_id, f"{TAG}iteration": str(it.iteration)}
    seeds = [_seed_view(row, ev.learning_curves.get(str(row.seed), []), seed_tags) for row in rows] if ev else []
    name = f"c{it.iteration:04d} {it.class_name or it.model_config.get('class_name') or 'model'}"
    return CandidateView(iteration=it.iteration, name=name, status=status, params=_params(it),
                         tags={k: v for k, v in tags.items() if v}, metrics=metrics, seeds=seeds,
                         config_yaml=yaml.safe_dump(it.model_config, sort_keys=False), code=code, plots=plots,
                         started_at=it.started_at, finished_at=it.finished_at or it.started_at)


def run_view(run: RunRecord, iterations: list[IterationRecord], artifacts: dict[str, bytes | None]) -> RunView:
    """The run as trackers show it; `artifacts` maps artifact names (code, plots) to their bytes."""
    goal = run.goal
    candidates = []
    for it in iterations:
        plots = {f: artifacts.get(name) for f, name in (it.evaluation.plots if it.evaluation else {}).items()}
        candidates.append(candidate_view(run, it, artifacts.get(it.code_artifact or ""),
                                         {f: png for f, png in plots.items() if png}))
    series: dict[str, list[tuple[int, float]]] = {}
    for it in iterations:
        score = it.goal_score(goal)
        if score is not None:
            series.setdefault(f"candidates/{goal.goal_metric}_{goal.goal_statistic}", []).append((it.iteration, score))
    metrics = summary_metrics(run.test.evaluation if run.test else None)
    if run.best_score is not None:
        metrics[f"best/{goal.goal_metric}_{goal.goal_statistic}"] = run.best_score
    tags = {f"{TAG}run_id": run.run_id, f"{TAG}role": "run", f"{TAG}goal": goal.goal, f"{TAG}dataset": goal.dataset,
            f"{TAG}status": run.status, f"{TAG}reason": run.reason or run.error or "",
            f"{TAG}best_iteration": "" if run.best_iteration is None else str(run.best_iteration),
            f"{TAG}goal_metric": goal.goal_metric, f"{TAG}goal_statistic": goal.goal_statistic}
    finished = run.finished_at or max([run.created_at, *(c.finished_at for c in candidates)])
    return RunView(run_id=run.run_id, name=f"{run.run_id} {goal.dataset}", status=_status_of_run(run),
                   params=flatten(msgspec.to_builtins(goal)), tags={k: v for k, v in tags.items() if v},
                   metrics=metrics, series=series, candidates=candidates,
                   report_json=json.dumps(build_report(run, iterations), indent=2),
                   started_at=run.created_at, finished_at=finished)


async def load_view(registry: Registry, run_id: str) -> RunView | None:
    """The run's view with its code and plots read from the registry; None: no such run."""
    records = await load_records(registry, run_id)
    if records is None:
        return None
    run, iterations = records
    names = {it.code_artifact for it in iterations if it.code_artifact}
    names |= {n for it in iterations for n in (it.evaluation.plots.values() if it.evaluation else [])}
    ordered = sorted(names)
    artifacts: dict[str, bytes | None] = {}
    for i in range(0, len(ordered), ARTIFACT_READS):  # a few reads in flight at once, not hundreds
        part = ordered[i: i + ARTIFACT_READS]
        artifacts |= dict(zip(part, await asyncio.gather(*(registry.get_artifact(name) for name in part))))
    return run_view(run, iterations, artifacts)
