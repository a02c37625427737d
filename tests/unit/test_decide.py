"""The planner's pure logic: deciding what comes next."""

import pytest

from services.planner.decide import budget_decision, decide
from shared.evaluation.aggregate import summarise
from shared.messaging.messages import EpochStats, Goal, SeedResult, ValidationResult
from shared.registry.records import IterationRecord

RUN = "run-decide"


def seed_result(iteration: int, seed: int, accuracy: float | None, error: str | None = None,
                curve: list[EpochStats] = (), loss: float = 0.5) -> SeedResult:
    """accuracy None: the seed failed with `error`."""
    ok = accuracy is not None
    return SeedResult(job_id=f"{RUN}.it{iteration:04d}.seed{seed}", run_id=RUN, iteration=iteration, seed=seed,
                      ok=ok, error=None if ok else error,
                      metrics={"val_accuracy": accuracy, "val_loss": loss} if ok else {},
                      learning_curve=list(curve), train_time_s=1.0, duration_s=2.0, evaluator="e0")


def evaluated(iteration: int, accuracies: list[float]) -> IterationRecord:
    seeds = list(range(len(accuracies)))
    results = {s: seed_result(iteration, s, a) for s, a in zip(seeds, accuracies)}
    return IterationRecord(run_id=RUN, iteration=iteration, state="evaluated", seeds=seeds,
                           validation=ValidationResult(ok=True, output_shape=[2, 10], param_count=100),
                           evaluation=summarise(results, seeds))


def rejected(iteration: int) -> IterationRecord:
    return IterationRecord(run_id=RUN, iteration=iteration, state="rejected",
                           validation=ValidationResult(ok=False, error="shape mismatch", reason="exception"),
                           evaluation=None)


def goal(**kw) -> Goal:
    settings = {"run_id": RUN, "goal": "classify digits", "target_accuracy": 0.9, "max_iterations": 10,
                "patience": 3} | kw
    return Goal(**settings)


# ---- decide ----
def test_goal_achieved_on_the_mean():
    decision, best_it, best_score = decide(goal(), [evaluated(1, [0.7, 0.72]), evaluated(2, [0.91, 0.93])])
    assert decision.action == "goal_achieved"
    assert decision.status == "goal_achieved"
    assert "mean" in decision.reasoning and "0.9200" in decision.reasoning
    assert (best_it, best_score) == (2, pytest.approx(0.92))


def test_reaching_the_target_exactly_achieves_the_goal():
    decision, _, _ = decide(goal(target_accuracy=0.75), [evaluated(1, [0.75, 0.75])])
    assert decision.action == "goal_achieved"


def test_mean_passes_but_the_lower_bound_does_not():
    history = [evaluated(1, [0.96, 0.90])]
    accuracy = history[0].evaluation.summary()
    assert accuracy.mean >= 0.92 > accuracy.ci_95[0]

    on_mean, _, mean_score = decide(goal(target_accuracy=0.92, goal_statistic="mean"), history)
    assert on_mean.action == "goal_achieved"
    assert mean_score == pytest.approx(0.93)

    on_lower, best_it, lower_score = decide(goal(target_accuracy=0.92, goal_statistic="ci_lower"), history)
    assert on_lower.action == "iterate"
    assert on_lower.status is None
    assert "lower 95% bound" in on_lower.reasoning
    assert best_it == 1
    assert lower_score == pytest.approx(accuracy.ci_95[0])


def test_goal_achieved_on_the_lower_bound_when_seeds_agree():
    decision, _, score = decide(goal(target_accuracy=0.9, goal_statistic="ci_lower"),
                                [evaluated(1, [0.95, 0.951, 0.952])])
    assert decision.action == "goal_achieved"
    assert 0.9 <= score < 0.951


SPENT = "the compute budget is spent: 30 of 30 seed-epochs used"


def test_a_spent_budget_ends_the_run_with_its_best():
    history = [evaluated(1, [0.5, 0.5]), evaluated(2, [0.6, 0.6]), evaluated(3, [0.7, 0.7])]
    _, best_it, best_score = decide(goal(), history)
    decision = budget_decision(goal(), best_score, SPENT)
    assert decision.action == "stop" and decision.status == "max_iterations"
    assert "30 of 30" in decision.reasoning and "0.7000" in decision.reasoning
    assert (best_it, best_score) == (3, pytest.approx(0.7))
    assert decide(goal(), history)[0].action == "iterate"  # a verdict alone: the search goes on


def test_a_spent_budget_with_every_candidate_rejected_reports_no_best():
    _, best_it, best_score = decide(goal(patience=5), [rejected(1), rejected(2)])
    assert (best_it, best_score) == (None, None)
    assert "n/a" in budget_decision(goal(), best_score, SPENT).reasoning


def test_a_cheap_rung_never_counts_for_the_goal():
    cheap = evaluated(1, [0.99])
    cheap.rung = 0
    decision, best_it, best_score = decide(goal(), [cheap])
    assert decision.action == "iterate"
    assert (best_it, best_score) == (None, None)


def test_no_progress_after_patience_iterations_without_a_better_best():
    history = [evaluated(1, [0.8, 0.8]), evaluated(2, [0.7, 0.7])]
    assert decide(goal(patience=2), history)[0].action == "iterate"

    history.append(evaluated(3, [0.75, 0.75]))
    decision, best_it, best_score = decide(goal(patience=2), history)
    assert decision.action == "stop"
    assert decision.status == "no_progress"
    assert "patience 2" in decision.reasoning
    assert (best_it, best_score) == (1, pytest.approx(0.8))


def test_an_equal_score_is_not_progress():
    history = [evaluated(1, [0.8, 0.8]), evaluated(2, [0.8, 0.8])]
    decision, best_it, _ = decide(goal(patience=1), history)
    assert decision.status == "no_progress"
    assert best_it == 1


def test_a_better_best_resets_patience():
    history = [evaluated(1, [0.8, 0.8]), evaluated(2, [0.7, 0.7]), evaluated(3, [0.85, 0.85]),
               evaluated(4, [0.6, 0.6])]
    decision, best_it, best_score = decide(goal(patience=2), history)
    assert decision.action == "iterate"
    assert (best_it, best_score) == (3, pytest.approx(0.85))



def test_a_rejected_iteration_is_no_progress_and_iterates_while_budget_remains():
    history = [evaluated(1, [0.8, 0.82]), rejected(2)]
    decision, best_it, best_score = decide(goal(patience=3), history)
    assert decision.action == "iterate"
    assert decision.status is None
    assert "rejected" in decision.reasoning
    assert (best_it, best_score) == (1, pytest.approx(0.81))

    history += [rejected(3), rejected(4)]
    decision, best_it, _ = decide(goal(patience=3), history)
    assert decision.status == "no_progress"
    assert best_it == 1


def test_a_rejected_first_iteration_iterates():
    decision, best_it, best_score = decide(goal(), [rejected(1)])
    assert decision.action == "iterate"
    assert decision.reasoning
    assert (best_it, best_score) == (None, None)


def test_an_iteration_whose_seeds_all_failed_has_no_score():
    seeds = [0, 1]
    record = IterationRecord(run_id=RUN, iteration=2, state="evaluated", seeds=seeds,
                             evaluation=summarise({0: seed_result(2, 0, None, "CUDA OOM")}, seeds))
    assert record.score("mean") is None
    decision, best_it, _ = decide(goal(), [evaluated(1, [0.5, 0.6]), record])
    assert decision.action == "iterate"
    assert best_it == 1


def test_best_iteration_and_score_across_the_history():
    history = [evaluated(1, [0.6, 0.62]), rejected(2), evaluated(3, [0.85, 0.87]), evaluated(4, [0.8, 0.8]),
               evaluated(5, [0.84, 0.84])]
    decision, best_it, best_score = decide(goal(target_accuracy=0.99, patience=5), history)
    assert decision.action == "iterate"
    assert (best_it, best_score) == (3, pytest.approx(0.86))


def test_best_on_the_lower_bound_can_differ_from_best_on_the_mean():
    noisy = evaluated(1, [0.99, 0.71])  # mean 0.85, a wide interval
    steady = evaluated(2, [0.80, 0.80])  # mean 0.80, no spread
    history = [noisy, steady]
    assert decide(goal(target_accuracy=0.99), history)[1] == 1
    _, best_it, best_score = decide(goal(target_accuracy=0.99, goal_statistic="ci_lower"), history)
    assert best_it == 2
    assert best_score == pytest.approx(0.8)


def test_one_seed_on_the_lower_bound_is_not_reported_as_rejected():
    decision, _, _ = decide(goal(goal_statistic="ci_lower", num_seeds=1), [evaluated(1, [0.95])])
    assert "rejected or failed" not in decision.reasoning




# ---- the goal check is exact ----
def test_a_mean_that_equals_the_target_reaches_it():
    # 103/120 and 113/120: their mean is 0.8999999999999999 in floating point, which is 0.90
    record = evaluated(1, [103 / 120, 113 / 120])
    assert record.score("mean") < 0.9  # the rounding error this guards against
    decision, _, _ = decide(goal(target_accuracy=0.9), [record])
    assert decision.action == "goal_achieved", decision.reasoning
    assert "0.9000 >= target 0.9000" in decision.reasoning


def test_a_mean_just_below_the_target_says_so_with_the_digits_that_differ():
    decision, _, _ = decide(goal(target_accuracy=0.9), [evaluated(1, [0.899996, 0.899996])])
    assert decision.action == "iterate"
    assert "0.899996 below target 0.900000" in decision.reasoning  # never "0.9000 below target 0.9000"
    decision, _, _ = decide(goal(target_accuracy=0.9, max_iterations=1), [evaluated(1, [0.899996, 0.899996])])
    assert "0.899996 below target 0.900000" in decision.reasoning
