"""What each page shows, built from the records alone (no I/O): plain dicts for the templates.

Every figure comes from the same functions the report uses (shared/registry/leaderboard.py,
costs.py, report.py), so the dashboard and `researcher report` never disagree. Text from outside
(goal text, LLM replies, generated code, error messages) stays text here; the templates escape it.
"""

from __future__ import annotations

import difflib
import json
import time
import zlib
from typing import Any

import msgspec

from shared.messaging.messages import TERMINAL_STATUSES, Event
from shared.registry.costs import candidate_cost, format_cost, run_cost
from shared.registry.held_out import format_held_out
from shared.registry.leaderboard import config_summary, fidelity, latest, leaderboard
from shared.registry.records import IterationRecord, RunRecord
from shared.registry.report import format_recipe, recipe_of, validation_report

CLASSES_SHOWN = 50  # per-class rows of a candidate page; the report has them all


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def when(ts: float | None) -> str:
    return "" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def run_row(run: RunRecord, iterations: list[IterationRecord] | None = None) -> dict[str, Any]:
    """A run in a line; with its candidates, what it spent (seed-epochs, and the containers' measured cost)."""
    goal = run.goal
    cost = None if iterations is None else run_cost(iterations)
    return {"run_id": run.run_id, "goal": goal.goal, "dataset": goal.dataset, "status": run.status,
            "paused": run.paused, "metric": goal.goal_metric,
            "target": fmt(goal.target_value), "best": fmt(run.best_score), "best_iteration": run.best_iteration,
            "candidates": run.current_iteration, "budget": run.budget_epochs, "created": when(run.created_at),
            "wall_s": round((run.finished_at or time.time()) - run.created_at), "error": run.error,
            "reason": run.reason,
            "spent": None if iterations is None else sum(it.compute() for it in iterations),
            "cost": format_cost(cost) if cost else "",
            "cpu_s": f"{cost.cpu_s:.0f}" if cost and cost.seeds else "",
            "gpu_s": f"{cost.gpu_s:.0f}" if cost and cost.gpu_s is not None else ""}


def _interval(mean: float | None, ci_95) -> str:
    if mean is None:
        return "n/a"
    ci = f" [{ci_95[0]:.4f}, {ci_95[1]:.4f}]" if ci_95 else ""
    return f"{mean:.4f}{ci}"


def run_view(run: RunRecord, iterations: list[IterationRecord]) -> dict[str, Any]:
    goal = run.goal
    board = leaderboard(run, iterations)
    for row in board:
        stats = row[row["metric"]]
        row["shown"] = f"{_interval(stats['mean'], stats['ci_95'])} (n={stats['n']})"
    reasons = {it.iteration: why_failed(it) for it in iterations}
    failed = [{"iteration": it.iteration, "state": it.state, "why": reasons[it.iteration], "config": config_summary(it)}
              for it in iterations if reasons[it.iteration]]
    # changes with any candidate's progress: the comparison plots' address, so a browser reloads them then
    version = zlib.crc32(repr([(it.iteration, it.state, it.rung, len(it.passed)) for it in iterations]).encode())
    return {**run_row(run, iterations), "ended": run.status in TERMINAL_STATUSES, "version": version,
            "facts": _facts(run), "goal_statistic": goal.goal_statistic,
            # an ended run's unfinished candidates were abandoned with it: none is in flight
            "in_flight": [{"iteration": it.iteration, "state": it.state, "fidelity": fidelity(it),
                           "config": config_summary(it), "proposer": it.proposer, "since": when(it.started_at)}
                          for it in iterations if it.in_flight and run.status not in TERMINAL_STATUSES],
            "abandoned": [it.iteration for it in iterations if it.in_flight and run.status in TERMINAL_STATUSES],
            "leaderboard": board, "failed": failed,
            "test": "\n".join(line for line in format_held_out(run, iterations) if line.strip()),
            "steering": [msgspec.to_builtins(s) for s in run.steering],
            "queued": [msgspec.to_builtins(q) for q in run.queued]}


def _facts(run: RunRecord) -> str:
    f = run.dataset_facts
    if f is None:
        return ""
    shape = "x".join(str(d) for d in f.input_shape)
    test = f", {f.num_test} held out for the test" if f.num_test else ""
    return f"{f.kind}, input {shape} ({f.input_dtype}), {f.num_classes} classes, {f.num_samples} samples{test}"


def why_failed(it: IterationRecord) -> str | None:
    """A rejected or failed candidate's reason, never a blank: the sandbox's verdict, the assembler's
    error, or every seed's failure."""
    if it.validation is not None and not it.validation.ok:
        return f"rejected by the sandbox ({it.validation.reason or 'no reason given'}): {it.validation.error or ''}".strip()
    if it.state == "rejected":
        attempt = it.code_attempts[-1] if it.code_attempts else None
        detail = attempt.error if attempt else (it.decision.reasoning if it.decision else "")
        return f"rejected: {detail or 'no reason recorded'}"
    evaluation = latest(it)
    if evaluation is not None and evaluation.failed_seeds and not any(row.ok for row in evaluation.seed_results):
        reasons = "; ".join(f"seed {f.seed}: {f.reason or ''} {f.error or ''}".strip() for f in evaluation.failed_seeds)
        return f"every seed failed: {reasons}"
    return None


def incumbent(iterations: list[IterationRecord], it: IterationRecord, run: RunRecord) -> IterationRecord | None:
    """The candidate `it` came from: the best measured one that had finished when it was proposed
    (the search and the planning LLM both work from the best so far); else the one before it."""
    lower = run.goal.lower_is_better
    done = [o for o in iterations if o.iteration < it.iteration and o.finished_at and o.finished_at <= it.started_at
            and latest(o) is not None and latest(o).summary(run.goal.goal_metric).mean is not None]
    if done:
        key = lambda o: latest(o).summary(run.goal.goal_metric).mean  # noqa: E731
        return min(done, key=key) if lower else max(done, key=key)
    return next((o for o in iterations if o.iteration == it.iteration - 1), None)


def diff_lines(old: str, new: str, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line): kind is add, del, hunk or same."""
    out = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm=""):
        kind = ("hunk" if line.startswith("@@") else "head" if line.startswith(("---", "+++"))
                else "add" if line.startswith("+") else "del" if line.startswith("-") else "same")
        out.append((kind, line))
    return out


def candidate_view(run: RunRecord, iterations: list[IterationRecord], it: IterationRecord) -> dict[str, Any]:
    metric = run.goal.goal_metric
    evaluation = latest(it)
    final = evaluation.final if evaluation else None
    recipe = recipe_of(it)
    seeds = []
    for row in evaluation.seed_results if evaluation else []:
        cost = row.cost
        seeds.append({"seed": row.seed, "ok": row.ok, "error": row.error, "reason": row.reason,
                      "score": fmt(row.metrics.get(metric)), "accuracy": fmt(row.metrics.get("val_accuracy")),
                      "train_s": round(row.train_time_s, 1), "evaluator": row.evaluator, "device": row.device,
                      "runtime": row.runtime or "", "cpu_s": fmt(cost.cpu_s, 1) if cost else "n/a",
                      "overfitting": row.dynamics.overfitting.severity if row.dynamics else "",
                      "convergence": row.dynamics.convergence.status if row.dynamics else ""})
    passed = []
    for p in it.passed:
        summary = p.evaluation.summary(metric) if p.evaluation else None
        passed.append({"index": p.index, "epochs": p.epochs, "seeds": len(p.seeds),
                       "shown": _interval(summary.mean, summary.ci_95) if summary else "n/a"})
    aggregated = [{"metric": name, "shown": _interval(s.mean, s.ci_95), "std": fmt(s.std), "n": s.n}
                  for name, s in (evaluation.aggregated.items() if evaluation else [])]
    state = f"abandoned: the run ended {run.status} while it was {it.state}" if (
        it.in_flight and run.status in TERMINAL_STATUSES) else it.state
    return {"iteration": it.iteration, "state": state, "proposer": it.proposer, "reasoning": it.reasoning,
            "fidelity": fidelity(it), "config_summary": config_summary(it),
            "config": json.dumps(it.model_config, indent=2, sort_keys=True),
            "recipe": format_recipe(recipe) if recipe else "settings that do not decode",
            "class_name": it.class_name, "assembler": it.assembler, "why_failed": why_failed(it),
            "validation": validation_report(it), "code_attempts": [msgspec.to_builtins(a) for a in it.code_attempts],
            "summary": msgspec.to_builtins(it.summary) if it.summary else None,
            "decision": msgspec.to_builtins(it.decision) if it.decision else None,
            "aggregated": aggregated, "seeds": seeds, "metric": metric,
            "per_class": [msgspec.to_builtins(c) for c in (final.per_class[:CLASSES_SHOWN] if final else [])],
            "confusion": final.confusion_matrix if final else None,
            "class_names": [c.class_name for c in final.per_class] if final else [],
            "plots": sorted(evaluation.plots) if evaluation else [],
            "has_curves": bool(evaluation and evaluation.learning_curves),
            "passed": passed,
            "cost": format_cost(candidate_cost(it)), "compute": it.compute(),
            "llm_calls": [msgspec.to_builtins(c) for c in it.llm_calls],
            "started": when(it.started_at), "finished": when(it.finished_at)}


def event_row(event: Event) -> dict[str, Any]:
    return {"kind": event.kind, "message": event.message, "iteration": event.iteration,
            "at": time.strftime("%H:%M:%S", time.localtime(event.ts))}


def event_json(event: Event) -> str:
    return json.dumps(event_row(event))
