"""The planner's pure logic: what a candidate's verdict at the full budget means for its run."""

from __future__ import annotations

from shared.messaging.messages import Goal, GoalStatistic, meets_target, versus_target
from shared.registry.records import EMPTY_SUMMARY, Decision, IterationRecord


def iteration_score(record: IterationRecord, statistic: GoalStatistic) -> float | None:
    """The goal statistic of an iteration evaluated at the full budget; None when it was rejected,
    every seed failed, or it stopped at a cheap rung."""
    return record.score(statistic)


def best_of(goal: Goal, history: list[IterationRecord]) -> tuple[int | None, float | None]:
    """The best candidate at the full budget and its score (the earliest of equals)."""
    best_it, best_score = None, None
    for record in history:
        score = iteration_score(record, goal.goal_statistic)
        if score is not None and (best_score is None or score > best_score):
            best_it, best_score = record.iteration, score
    return best_it, best_score


def decide(goal: Goal, history: list[IterationRecord]) -> tuple[Decision, int | None, float | None]:
    """-> (decision on the last verdict, best iteration, best score). `history` holds the run's
    verdicts in the order they came (full evaluations and rejections), the last the one decided now.
    A spent compute budget is the run's own end (`budget_decision`), not a verdict's."""
    current = history[-1]
    best_it, best_score, since_best = None, None, 0
    for record in history:
        score = iteration_score(record, goal.goal_statistic)
        if score is not None and (best_score is None or score > best_score):
            best_it, best_score, since_best = record.iteration, score, 0
        else:
            since_best += 1
    score = iteration_score(current, goal.goal_statistic)
    label = _label(goal)
    if meets_target(score, goal.target_accuracy):
        return Decision(action="goal_achieved", status="goal_achieved",
                        reasoning=f"validation accuracy {label} {versus_target(score, goal.target_accuracy)}"), best_it, best_score
    if since_best >= goal.patience:
        return Decision(action="stop", status="no_progress",
                        reasoning=f"no better result in the last {since_best} full evaluations (patience {goal.patience}); "
                                  f"best {label} {_fmt(best_score)}"), best_it, best_score
    accuracy = current.evaluation.summary() if current.evaluation else EMPTY_SUMMARY
    if score is not None:
        why = f"{label} {versus_target(score, goal.target_accuracy)}"
    elif accuracy.n:
        why = (f"only {accuracy.n} seed(s) succeeded (mean {accuracy.mean:.4f}), too few for a 95% interval, "
               "so its lower bound is undefined")
    else:
        why = "this configuration was rejected or failed; trying another"
    return Decision(action="iterate", reasoning=f"{why}; the search goes on"), best_it, best_score


def budget_decision(goal: Goal, best_score: float | None, spent: str) -> Decision:
    """The run's end when its compute budget allows nothing more."""
    label = _label(goal)
    return Decision(action="stop", status="max_iterations",
                    reasoning=f"{spent}; best {label} "
                              + (versus_target(best_score, goal.target_accuracy) if best_score is not None
                                 else f"n/a, target {goal.target_accuracy:.4f}"))


def _label(goal: Goal) -> str:
    return "mean" if goal.goal_statistic == "mean" else "lower 95% bound"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
