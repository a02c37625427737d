"""The run report, built from the registry alone, and the export layout researchers know."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import yaml

from shared.llm.usage import format_sources, llm_sources, usage_by_role
from shared.messaging.messages import PROBE_BATCH, TrainingRecipe
from shared.registry.best_model import export_best
from shared.registry.held_out import format_held_out, held_out_section
from shared.registry.costs import (candidate_cost, compute_points, cost_report, evaluation_cost, format_cost,
                                   format_seed_cost, run_cost)
from shared.registry.leaderboard import (compute, fidelity, format_leaderboard, format_proposers, leaderboard,
                                         proposers)
from shared.registry.records import DEFAULT_METRIC, IterationRecord, RunRecord
from shared.registry.store import Registry


def validation_report(it: IterationRecord) -> dict[str, Any]:
    """The sandbox's verdict with its shapes and FLOPs per sample (the probe pass ran PROBE_BATCH)."""
    v = it.validation
    if v is None:
        return {"ok": None, "error": None, "reason": None, "output_shape": None, "param_count": None}
    return {"ok": v.ok, "error": v.error, "reason": v.reason,
            "output_shape": v.output_shape[1:] if v.output_shape else v.output_shape,  # one sample's, no batch axis
            "param_count": v.param_count, "trainable_params": v.trainable_params, "duration_s": v.duration_s,
            "layers": v.layers, "flops_per_sample": v.flops // PROBE_BATCH if v.flops is not None else None,
            "output_tail": v.output_tail,
            # output_shape, param_count, trainable_params, layers and flops are the code's own claims
            "reported_by": v.reported_by,
            "runtime": v.runtime}  # the container's OCI runtime: runsc (gVisor) or runc


def recipe_of(it: IterationRecord) -> TrainingRecipe | None:
    """How the candidate is trained, preprocessing included, read from its model_config as the
    planner reads it for the evaluation jobs; None where those settings do not decode (a proposal
    rejected for them)."""
    try:
        return TrainingRecipe.from_model_config(it.model_config)
    except msgspec.ValidationError:
        return None


def format_recipe(recipe: TrainingRecipe) -> str:
    inputs = ("inputs standardised with the training split's mean and std" if recipe.standardize
              else "raw inputs (not standardised)")
    return (f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr:g}, weight decay "
            f"{recipe.weight_decay:g}{', augmented' if recipe.augment else ''}"
            f"{', class-weighted loss' if recipe.class_weights else ''}; {inputs}")


def iteration_report(it: IterationRecord) -> dict[str, Any]:
    return {
        "iteration": it.iteration,
        "state": it.state,
        "proposer": it.proposer,
        "model_config": it.model_config,
        "recipe": msgspec.to_builtins(recipe_of(it)),  # its training settings and preprocessing, defaults filled in
        "class_name": it.class_name,
        "assembler": it.assembler,
        "code_attempts": msgspec.to_builtins(it.code_attempts),
        "validation": validation_report(it),
        "summary": msgspec.to_builtins(it.summary),
        "evaluation": msgspec.to_builtins(it.evaluation),
        "decision": msgspec.to_builtins(it.decision),
        "llm_calls": msgspec.to_builtins(it.llm_calls),
        "started_at": it.started_at,
        "finished_at": it.finished_at,
        # ---- successive halving: the rung it reached, its ladder, the cheaper rungs it passed ----
        "fidelity": fidelity(it),
        "rung": it.rung,
        "ladder": msgspec.to_builtins(it.ladder),
        "passed": msgspec.to_builtins(it.passed),
        "compute_seed_epochs": it.compute(),
        "reasoning": it.reasoning,  # where its proposal came from
    }


def best_iteration(run: RunRecord, iterations: list[IterationRecord]) -> IterationRecord | None:
    return next((it for it in iterations if it.iteration == run.best_iteration), None)


def build_report(run: RunRecord, iterations: list[IterationRecord]) -> dict[str, Any]:
    """The report as plain JSON data (--json, report.json, registry.json)."""
    chosen, best = best_iteration(run, iterations), None
    if chosen is not None:
        best = {"iteration": chosen.iteration, "score": run.best_score, "goal_statistic": run.goal.goal_statistic,
                "goal_metric": run.goal.goal_metric,
                run.goal.goal_metric: msgspec.to_builtins(chosen.evaluation.summary(run.goal.goal_metric))
                if chosen.evaluation else None,
                "val_accuracy": msgspec.to_builtins(chosen.evaluation.summary()) if chosen.evaluation else None,
                "model_config": chosen.model_config, "recipe": msgspec.to_builtins(recipe_of(chosen)),
                "param_count": chosen.validation.param_count if chosen.validation else None,
                "reported_by": chosen.validation.reported_by if chosen.validation else None}
    return {
        "run_id": run.run_id,
        "goal": run.goal.goal,
        "dataset": run.goal.dataset,
        "dataset_facts": msgspec.to_builtins(run.dataset_facts),
        "target_accuracy": run.goal.target_accuracy,
        "goal_metric": run.goal.goal_metric,
        "target": run.goal.target_value,
        "lower_is_better": run.goal.lower_is_better,
        "goal_statistic": run.goal.goal_statistic,
        "status": run.status,
        "error": run.error,
        "settings": msgspec.to_builtins(run.goal),
        "iterations": [iteration_report(it) for it in iterations],
        "leaderboard": leaderboard(run, iterations),
        "proposers": proposers(iterations, run.goal.goal_metric),
        "compute": compute(run, iterations, run.budget_epochs),
        "container_runtimes": container_runtimes(iterations),
        "reason": run.reason,
        # steering by hand: paused now, the configs queued and waiting, every action taken with who
        "paused": run.paused,
        "queued": msgspec.to_builtins(run.queued),
        "steering": msgspec.to_builtins(run.steering),
        "best": best,
        # its best candidate on the held-out test split beside its validation figures: what to report
        "test": held_out_section(run, iterations),
        # measured compute per candidate and for the search, beside the LLM tokens; the final test's apart
        "cost": {**cost_report(iterations),
                 "test": msgspec.to_builtins(evaluation_cost(run.test.evaluation)) if run.test else None},
        "llm_usage": _llm_usage(iterations),
        "llm_sources": llm_sources(run, iterations),  # the LLMs' share of the work, and each fallback's why
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "wall_time_s": _wall_time(run),
    }


def _wall_time(run: RunRecord) -> float | None:
    return round(run.finished_at - run.created_at, 1) if run.finished_at else None


def _llm_usage(iterations: list[IterationRecord]) -> dict[str, Any]:
    """Totals per role (planning, tools) and for the run: calls, failed calls, tokens, seconds."""
    calls = [c for it in iterations for c in it.llm_calls]
    per_role = usage_by_role(calls)
    total = {key: sum(row[key] for row in per_role.values()) for key in ("calls", "failed", "tokens_in", "tokens_out")}
    total["latency_s"] = round(sum(row["latency_s"] for row in per_role.values()), 3)
    return {"per_role": per_role, "total": total}


async def load_records(registry: Registry, run_id: str) -> tuple[RunRecord, list[IterationRecord]] | None:
    """A run and its iterations, oldest first; None when the registry has no such run."""
    run = await registry.get_run(run_id)
    if run is None:
        return None
    return run, await registry.iterations(run_id, run.current_iteration)


async def load_report(registry: Registry, run_id: str) -> dict[str, Any] | None:
    records = await load_records(registry, run_id)
    return build_report(*records) if records else None


RUNTIMES = {"runsc": "runsc (gVisor: the code's system calls reach gVisor's kernel, not the host's)",
            "runc": "runc with the sandbox's seccomp profile"}


def container_runtimes(iterations: list[IterationRecord]) -> dict[str, int]:
    """How many of the run's containers (validations and seed jobs, cheap rungs included) ran under
    each OCI runtime; those recorded before runtimes were are not counted."""
    seen: list[str | None] = [it.validation.runtime for it in iterations if it.validation]
    for it in iterations:
        for evaluation in [it.evaluation, *(p.evaluation for p in it.passed)]:
            seen += [row.runtime for row in (evaluation.seed_results if evaluation else [])]
    return {name: seen.count(name) for name in sorted({r for r in seen if r})}


# C0 controls but newline and tab, DEL, and C1 controls: the ones a terminal acts on
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f, *range(0x80, 0xa0)) if c not in (0x09, 0x0a)}


def for_terminal(text: str) -> str:
    """`text` with the characters a terminal would act on shown as escapes: a goal, an LLM's reply or
    an event may carry them (a title change, a cleared screen, a forged line), and none must reach
    the researcher's terminal as anything but text."""
    return text.translate(_CONTROLS)


def _outcome(it: IterationRecord, metric: str) -> str:
    """The candidate's goal metric (and its accuracy beside it, when the goal is on another metric)."""
    v = it.validation
    if v is not None and not v.ok:
        return f"rejected: {v.error}"
    shown = [_measured(it, metric)] + ([_measured(it, DEFAULT_METRIC)] if metric != DEFAULT_METRIC else [])
    return "; ".join(part for part in shown if part) or it.state


def _measured(it: IterationRecord, metric: str) -> str:
    summary = it.evaluation.summary(metric) if it.evaluation else None
    if summary is not None and summary.n == 1 and summary.mean is not None:  # one seed: say which
        only = next((row.seed for row in it.evaluation.seed_results if row.ok), None)  # type: ignore[union-attr]
        return f"{metric} {summary.mean:.4f} from one seed (seed {only})"
    if summary is not None and summary.n and summary.mean is not None:
        ci = f" [{summary.ci_95[0]:.4f}, {summary.ci_95[1]:.4f}]" if summary.ci_95 else ""
        return f"{metric} {summary.mean:.4f} ± {summary.std or 0.0:.4f}{ci} over {summary.n} seeds"
    return ""


def format_report(run: RunRecord, iterations: list[IterationRecord]) -> str:
    """A human reading of a run for a terminal."""
    goal = run.goal
    lines = [f"run {run.run_id}: {goal.goal!r} on {goal.dataset}",
             f"status: {run.status}" + (f" ({run.error})" if run.error else "")
             + (" (paused by hand)" if run.paused and run.status == "running" else ""),
             f"target: {goal.goal_metric} {'<=' if goal.lower_is_better else '>='} {goal.target_value:.4f}, on its "
             f"{goal.goal_statistic} over seeds on the validation split (the split candidates are selected on)", ""]
    if run.dataset_facts is not None and run.dataset_facts.columns:  # a table read from a file: what became of it
        lines[-1:-1] = [f"table: {run.dataset_facts.columns_summary()}"]
    if run.dataset_facts is not None and run.dataset_facts.text is not None:  # a text set: its tokens
        lines[-1:-1] = [f"text: {run.dataset_facts.text_summary()}"]
    lines += format_held_out(run, iterations)  # first: the figures to report
    lines += format_leaderboard(leaderboard(run, iterations)) + [""]
    detailed = [it for it in iterations if (it.rung is None and it.evaluation is not None) or len(iterations) <= 12]
    if len(detailed) < len(iterations):
        lines.append(f"the {len(detailed)} candidates evaluated at the full budget (all {len(iterations)}: --json):")
    for it in detailed:
        v = it.validation
        params = ""
        if v is not None and v.param_count:
            flops = f", {v.flops // PROBE_BATCH:,} FLOPs per sample" if v.flops is not None else ""
            params = f"{v.param_count:,} params{flops} (reported by the model's process), "
        at = "" if it.rung is None else f" [{fidelity(it)}]"
        lines.append(f"  #{it.iteration} {it.class_name or it.model_config.get('class_name', '?')}{at}: {params}"
                     f"{_outcome(it, goal.goal_metric)}")
        recipe = recipe_of(it) if it.evaluation else None  # a candidate that never trained had none
        if recipe is not None:
            lines.append(f"      trained: {format_recipe(recipe)}")
        lines += _cost_lines(it)
        for failure in (it.evaluation.failed_seeds if it.evaluation else []):
            lines.append(f"      seed {failure.seed} failed ({failure.reason or 'error'}): {failure.error}")
        if it.decision:
            lines.append(f"      -> {it.decision.action}: {it.decision.reasoning}")
            if it.decision.disagreement:
                lines.append(f"      !! {it.decision.disagreement}")
    if run.best_iteration is not None and run.best_score is not None:
        lines += ["", f"best: iteration {run.best_iteration} ({goal.goal_metric} {goal.goal_statistic} {run.best_score:.4f})"]
        chosen = best_iteration(run, iterations)
        final = chosen.evaluation if chosen is not None and chosen.evaluation else None
        if final is not None and final.best_seed is not None and final.final is not None:
            score = getattr(final.final, goal.goal_metric, None)
            lines.append(f"      its best seed: {final.best_seed}" + (f" ({goal.goal_metric} {score:.4f})" if score is not None
                                                                       else "") + ", the one its confusion matrix shows")
    spent = compute(run, iterations, run.budget_epochs)
    lines += ["", f"compute: {spent['spent_seed_epochs']} of {spent['budget_seed_epochs']} seed-epochs, "
                  f"{spent['candidates']} candidates, {spent['reached_full_budget']} at the full budget"]
    lines += ["proposers:"] + format_proposers(proposers(iterations, goal.goal_metric))
    runtimes = container_runtimes(iterations)
    if runtimes:
        lines.append("containers: " + "; ".join(f"{count} under {RUNTIMES.get(name, name)}" for name, count in runtimes.items()))
    lines += format_steering(run)
    if run.reason:
        lines.append(f"ended: {run.reason}")
    lines.append(f"compute measured: {format_cost(run_cost(iterations))}"
                 + (f"; the final test: {format_cost(evaluation_cost(run.test.evaluation))}"
                    if run.test and run.test.evaluation else ""))
    for role, row in _llm_usage(iterations)["per_role"].items():
        lines.append(f"{role} LLM: {row['calls']} calls ({row['failed']} failed), {row['tokens_in']:,} tokens in, "
                     f"{row['tokens_out']:,} out, {row['latency_s']:.1f} s")
    lines += format_sources(llm_sources(run, iterations))
    wall = _wall_time(run)
    if wall is not None:
        lines.append(f"wall time: {wall} s")
    return "\n".join(lines)


def format_steering(run: RunRecord) -> list[str]:
    """Every action taken on the run by hand, with who and when (UTC), and the configs still queued."""
    lines = [f"steered by hand ({len(run.steering)}):"] if run.steering else []
    for record in run.steering:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.at))
        lines.append(f"  {when} {record.action} by {record.by}" + (f": {record.detail}" if record.detail else ""))
    if run.queued:
        lines.append(f"  queued, not started yet: {len(run.queued)} config(s)")
    return lines


def _cost_lines(it: IterationRecord) -> list[str]:
    """Its measured cost over every rung, and each seed's of its current evaluation."""
    cost = candidate_cost(it)
    if not cost.seeds and not cost.unmeasured:
        return []
    seeds = [format_seed_cost(row.seed, row.cost) for row in (it.evaluation.seed_results if it.evaluation else [])
             if row.cost and row.cost.cpu_s is not None]
    return [f"      cost: {format_cost(cost)}"] + ([f"        {'; '.join(seeds)}"] if seeds else [])


async def export_run(registry: Registry, run_id: str, out: Path) -> Path:
    """registry.json, configs/models/, src/models/, experiments/<run_id>/{model_config.yaml,
    model_code.py, summary.json, results.json} (the best iteration), with every iteration beside it,
    and experiments/<run_id>/best/ (its code, weights and preprocessing: shared.registry.best_model)."""
    records = await load_records(registry, run_id)
    if records is None:
        raise KeyError(run_id)
    run, iterations = records
    report = build_report(run, iterations)
    for sub in ("configs/models", "src/models", f"experiments/{run_id}"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for it in iterations:
        stem = f"{run_id}_it{it.iteration:02d}_{it.class_name or 'model'}"
        code = (await registry.get_artifact(it.code_artifact)) if it.code_artifact else None
        (out / "configs/models" / f"{stem}.yaml").write_text(yaml.safe_dump(it.model_config, sort_keys=False))
        if code:
            (out / "src/models" / f"{stem}.py").write_bytes(code)
        folder = out / "experiments" / run_id / f"iteration_{it.iteration:02d}"
        plots = {filename: await registry.get_artifact(name)
                 for filename, name in (it.evaluation.plots if it.evaluation else {}).items()}
        _write_experiment(folder, it, code, run_id, plots)
        if it.iteration == run.best_iteration:  # the experiment's top level holds its best model
            _write_experiment(out / "experiments" / run_id, it, code, run_id, plots)
            await export_best(registry, run, it, code, out / "experiments" / run_id / "best")
        entries.append({"run_id": run_id, "iteration": it.iteration, "class_name": it.class_name,
                        "config": f"configs/models/{stem}.yaml", "code": f"src/models/{stem}.py" if code else None,
                        "valid": it.validation.ok if it.validation else None,
                        "val_accuracy": it.evaluation.summary().mean if it.evaluation else None})
    registry_file = out / "registry.json"
    existing = json.loads(registry_file.read_text()) if registry_file.exists() else {"models": [], "runs": []}
    existing["models"] = [m for m in existing.get("models", []) if m.get("run_id") != run_id] + entries
    existing["runs"] = [r for r in existing.get("runs", []) if r.get("run_id") != run_id] + [
        {k: report[k] for k in ("run_id", "goal", "dataset", "status", "best", "created_at", "finished_at")}]
    registry_file.write_text(json.dumps(existing, indent=2))
    (out / "experiments" / run_id / "report.json").write_text(json.dumps(report, indent=2))
    from shared.evaluation.plots import accuracy_vs_compute_png  # matplotlib only for an export
    points, axis = compute_points(iterations, run.goal.goal_metric)
    (out / "experiments" / run_id / "accuracy_vs_compute.png").write_bytes(
        accuracy_vs_compute_png(points, metric=run.goal.goal_metric, axis=axis, title=f"run {run_id}"))
    return out


def _write_experiment(folder: Path, it: IterationRecord, code: bytes | None, run_id: str,
                      plots: dict[str, bytes | None]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for filename, png in plots.items():  # confusion_matrix.png, learning_curves.png beside results.json
        if png:
            (folder / filename).write_bytes(png)
    (folder / "model_config.yaml").write_text(yaml.safe_dump(it.model_config, sort_keys=False))
    if code:
        (folder / "model_code.py").write_bytes(code)
    recorded = msgspec.to_builtins(it.summary) if it.summary else {"facts": None, "narrative": None, "narrative_error": None}
    summary = {"run_id": run_id, "iteration": it.iteration, "class_name": it.class_name,
               "assembler": it.assembler, **recorded, "validation": validation_report(it)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    results = {"run_id": run_id, "iteration": it.iteration, "evaluation": msgspec.to_builtins(it.evaluation),
               "decision": msgspec.to_builtins(it.decision)}
    (folder / "results.json").write_text(json.dumps(results, indent=2))
