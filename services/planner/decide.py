"""The planner's pure logic: summarise an iteration's seeds, and decide what comes next."""

from __future__ import annotations

import msgspec

from shared.dynamics import analyse_learning
from shared.messages import Goal, SeedResult
from shared.registry import Decision, IterationRecord
from shared.stats import aggregate, goal_statistic, metric_bounds


def summarise(results: dict[int, SeedResult], seeds: list[int]) -> dict:
    """Aggregate every metric over the seeds that succeeded; failed or missing seeds are listed."""
    ok = {s: r for s, r in results.items() if r.ok}
    names = sorted({name for r in ok.values() for name, value in r.metrics.items() if value is not None})
    aggregated = {name: aggregate([r.metrics[name] for r in ok.values() if r.metrics.get(name) is not None],
                                  bounds=metric_bounds(name)) for name in names}
    failed = [{"seed": s, "error": results[s].error if s in results else "no result arrived in time"}
              for s in seeds if s not in ok]
    best_seed = max(ok, key=lambda s: ok[s].metrics.get("val_accuracy") or 0.0) if ok else None
    curves = {str(s): [{k: v for k, v in msgspec.to_builtins(e).items() if v is not None} for e in r.learning_curve]
              for s, r in sorted(ok.items())}
    return {
        "num_seeds": len(seeds),
        "aggregated": aggregated,
        "failed_seeds": failed,
        "best_seed": best_seed,
        "final": {**ok[best_seed].metrics, **ok[best_seed].details} if best_seed is not None else None,
        "seed_results": [
            {"seed": s, "ok": r.ok, "error": r.error, "metrics": r.metrics, "train_time_s": r.train_time_s,
             "samples_per_s": r.samples_per_s, "duration_s": r.duration_s, "evaluator": r.evaluator, "device": r.device,
             "dynamics": analyse_learning(curves[str(s)]) if r.ok and curves.get(str(s)) else None}
            for s, r in sorted(results.items())
        ],
        "learning_curves": curves,
    }


def iteration_score(record: IterationRecord, statistic: str) -> float | None:
    """The goal statistic of an evaluated iteration; None when it was rejected or every seed failed."""
    evaluation = record.evaluation or {}
    accuracy = (evaluation.get("aggregated") or {}).get("val_accuracy")
    return goal_statistic(accuracy, statistic) if accuracy and accuracy.get("n") else None


def decide(goal: Goal, history: list[IterationRecord]) -> tuple[Decision, int | None, float | None]:
    """-> (decision for the last iteration, best iteration, best score) over the whole history."""
    current = history[-1]
    best_it, best_score, since_best = None, None, 0
    for record in history:
        score = iteration_score(record, goal.goal_statistic)
        if score is not None and (best_score is None or score > best_score):
            best_it, best_score, since_best = record.iteration, score, 0
        else:
            since_best += 1
    score = iteration_score(current, goal.goal_statistic)
    label = "mean" if goal.goal_statistic == "mean" else "lower 95% bound"
    if score is not None and score >= goal.target_accuracy:
        return Decision(action="goal_achieved", status="goal_achieved",
                        reasoning=f"validation accuracy {label} {score:.4f} >= target {goal.target_accuracy:.4f}"), best_it, best_score
    if current.iteration >= goal.max_iterations:
        return Decision(action="stop", status="max_iterations",
                        reasoning=f"iteration budget of {goal.max_iterations} spent; best {label} "
                                  f"{_fmt(best_score)} below target {goal.target_accuracy:.4f}"), best_it, best_score
    if since_best >= goal.patience:
        return Decision(action="stop", status="no_progress",
                        reasoning=f"no better result in the last {since_best} iterations (patience {goal.patience}); "
                                  f"best {label} {_fmt(best_score)}"), best_it, best_score
    accuracy = ((current.evaluation or {}).get("aggregated") or {}).get("val_accuracy") or {}
    if score is not None:
        why = f"{label} {score:.4f} below target {goal.target_accuracy:.4f}"
    elif accuracy.get("n"):
        why = (f"only {accuracy['n']} seed(s) succeeded (mean {accuracy['mean']:.4f}), too few for a 95% interval, "
               "so its lower bound is undefined")
    else:
        why = "this configuration was rejected or failed; trying another"
    return Decision(action="iterate", reasoning=f"{why}; proposing from the best so far"), best_it, best_score


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
