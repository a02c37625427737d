"""The planner's pure logic: what a candidate's verdict at the full budget means for its run."""

from __future__ import annotations

from shared.messaging.messages import Goal, meets_target, versus_target
from shared.registry.records import EMPTY_SUMMARY, Decision, IterationRecord, better


def best_of(goal: Goal, history: list[IterationRecord]) -> tuple[int | None, float | None]:
    """The best candidate at the full budget on the goal's metric and its score (the earliest of equals)."""
    best_it, best_score = None, None
    for record in history:
        score = record.goal_score(goal)
        if better(score, best_score, goal.lower_is_better):
            best_it, best_score = record.iteration, score
    return best_it, best_score


def decide(goal: Goal, history: list[IterationRecord]) -> tuple[Decision, int | None, float | None]:
    """-> (decision on the last verdict, best iteration, best score). `history` holds the run's
    verdicts in the order they came (full evaluations and rejections), the last the one decided now.
    A spent compute budget is the run's own end (`budget_decision`), not a verdict's."""
    current = history[-1]
    best_it, best_score, since_best = None, None, 0
    for record in history:
        score = record.goal_score(goal)
        if better(score, best_score, goal.lower_is_better):
            best_it, best_score, since_best = record.iteration, score, 0
        else:
            since_best += 1
    score = current.goal_score(goal)
    label = goal_label(goal)
    lower = goal.lower_is_better
    if meets_target(score, goal.target_value, lower):
        return Decision(action="goal_achieved", status="goal_achieved",
                        reasoning=f"{label} {versus_target(score, goal.target_value, lower)}"), best_it, best_score
    if since_best >= goal.patience:
        return Decision(action="stop", status="no_progress",
                        reasoning=f"no better result in the last {since_best} full evaluations (patience {goal.patience}); "
                                  f"best {label} {_fmt(best_score)}"), best_it, best_score
    measured = current.evaluation.summary(goal.goal_metric) if current.evaluation else EMPTY_SUMMARY
    if score is not None:
        why = f"{label} {versus_target(score, goal.target_value, lower)}"
    elif measured.n:
        why = (f"only {measured.n} seed(s) succeeded (mean {goal.goal_metric} {measured.mean:.4f}), too few for a "
               "95% interval, so its bound is undefined")
    else:
        why = "this configuration was rejected, failed, or has no value of the goal's metric; trying another"
    return Decision(action="iterate", reasoning=f"{why}; the search goes on"), best_it, best_score


def budget_decision(goal: Goal, best_score: float | None, spent: str, status: str = "max_iterations") -> Decision:
    """The run's end when a budget allows nothing more: the compute the search plans with
    (max_iterations), or one of the goal's own limits (budget_spent)."""
    return Decision(action="stop", status=status,  # type: ignore[arg-type]
                    reasoning=f"{spent}; best {goal_label(goal)} "
                              + (versus_target(best_score, goal.target_value, goal.lower_is_better)
                                 if best_score is not None else f"n/a, target {goal.target_value:.4f}"))


def goal_label(goal: Goal) -> str:
    """"val_accuracy mean", "val_loss upper 95% bound": what a goal's score is."""
    if goal.goal_statistic == "mean":
        return f"{goal.goal_metric} mean"
    return f"{goal.goal_metric} {'upper' if goal.lower_is_better else 'lower'} 95% bound"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
