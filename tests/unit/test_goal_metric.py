"""A goal on any metric, in either direction, and the goal's own budgets: the pure logic."""

import pytest

from services.planner import budgets
from services.planner.decide import decide
from services.planner.driver import trial_of
from services.planner.proposers import incumbent
from services.planner.search import rebuild_study
from shared.evaluation.aggregate import summarise
from shared.messaging.messages import Goal, LLMCall, SeedCost, SeedResult, ValidationResult, goal_problems, meets_target
from shared.registry.leaderboard import leaderboard
from shared.registry.records import IterationRecord, RunRecord

RUN = "run-metric"


def result(iteration: int, seed: int, loss: float, f1: float, cpu_s: float = 1.0) -> SeedResult:
    return SeedResult(job_id=f"{RUN}.it{iteration:04d}.seed{seed}", run_id=RUN, iteration=iteration, seed=seed, ok=True,
                      metrics={"val_accuracy": 0.5, "val_loss": loss, "val_f1_macro": f1},
                      cost=SeedCost(wall_s=2.0, cpu_s=cpu_s, peak_memory_bytes=1 << 20))


def evaluated(iteration: int, losses: list[float], f1s: list[float], state: str = "decided") -> IterationRecord:
    seeds = list(range(len(losses)))
    results = {s: result(iteration, s, loss, f1) for s, loss, f1 in zip(seeds, losses, f1s)}
    return IterationRecord(run_id=RUN, iteration=iteration, state=state, seeds=seeds,
                           validation=ValidationResult(ok=True, param_count=10),
                           evaluation=summarise(results, seeds, rank_by="val_loss"))


def goal(**fields) -> Goal:
    return Goal(**{"run_id": RUN, "goal": "g", "patience": 5, **fields})


def test_a_loss_goal_is_lower_is_better_everywhere():
    g = goal(goal_metric="val_loss", target=0.2)
    worse, better = evaluated(1, [0.50, 0.52], [0.9, 0.9]), evaluated(2, [0.30, 0.32], [0.1, 0.1])
    decision, best_it, best_score = decide(g, [worse, better])
    assert (best_it, best_score) == (2, pytest.approx(0.31)) and decision.action == "iterate"
    assert "val_loss mean 0.3100 above target 0.2000" in decision.reasoning
    reached, _, _ = decide(g, [worse, better, evaluated(3, [0.15, 0.17], [0.1, 0.1])])
    assert reached.status == "goal_achieved" and "<= target" in reached.reasoning
    assert better.evaluation.best_seed == 0  # the seed with the lower loss
    assert incumbent([worse, better], g).iteration == 2
    assert trial_of(better, g).scores[None] > trial_of(worse, g).scores[None]  # successive halving ranks by maximum
    assert [row["iteration"] for row in leaderboard(RunRecord(run_id=RUN, goal=g), [worse, better])] == [2, 1]
    # the cautious end of a loss's interval is its upper bound
    cautious = better.score("ci_lower", "val_loss")
    assert cautious == better.evaluation.summary("val_loss").ci_95[1] > 0.31


def test_the_goal_metric_not_accuracy_picks_the_best():
    g = goal(goal_metric="val_f1_macro", target=0.95)
    _, best_it, _ = decide(g, [evaluated(1, [0.3, 0.3], [0.6, 0.62]), evaluated(2, [0.9, 0.9], [0.8, 0.82])])
    assert best_it == 2  # its loss is worse, its F1 better


def test_targets_follow_the_direction():
    assert meets_target(0.2, 0.25, lower=True) and not meets_target(0.3, 0.25, lower=True)
    assert goal_problems(goal(goal_metric="val_loss", target=2.5)) == []  # a loss may exceed 1
    assert goal_problems(goal(goal_metric="val_pr_auc", target=1.5))[0].startswith("target must be in (0, 1]")
    assert "goal_metric must be one of" in goal_problems(goal(goal_metric="accuracy"))[0]
    assert goal_problems(goal(goal_metric="val_loss"))[0].startswith("target is needed for val_loss")  # not 0.95


def test_a_failed_trial_never_ranks_above_a_measured_loss():
    from services.planner.search import SearchBounds, default_params
    from shared.data.datasets import load_dataset

    facts = load_dataset("iris").facts()
    params = default_params(facts, SearchBounds())
    study, _ = rebuild_study(facts, [(params, -0.4), (params, None)], seed=0)  # oriented: a loss of 0.4, a failure
    assert [t.value for t in study.trials] == [-0.4, -0.4]


def test_budgets_count_measured_cost_and_tokens():
    call = LLMCall(role="planning", purpose="propose", model="m", outcome="ok", tokens_in=700, tokens_out=300)
    run = RunRecord(run_id=RUN, goal=goal(max_cpu_s=5.0, max_llm_tokens=1500), llm_check=[call])
    done = evaluated(1, [0.5, 0.5], [0.5, 0.5])  # two seeds of 1 CPU second each
    flying = IterationRecord(run_id=RUN, iteration=2, state="evaluating", seeds=[0, 1], llm_calls=[call])
    pending = budgets.Unaggregated()
    pending.add(result(2, 0, 0.5, 0.5, cpu_s=2.5))
    pending.add(result(9, 0, 0.5, 0.5, cpu_s=100.0))  # no such candidate waits for it: not counted
    used = budgets.spent(run, [done, flying], pending.spent({1: done, 2: flying}))
    assert (used.cpu_s, used.llm_tokens, used.seeds_measured) == (4.5, 2000, 3)
    assert budgets.reached(run.goal, used).startswith("the LLM token budget is spent: 2,000 of 1,500")
    assert pending.complete({1: done, 2: flying}) == []  # one of its two seeds is in
    pending.add(result(2, 1, 0.5, 0.5, cpu_s=0.5))
    assert pending.complete({1: done, 2: flying}) == [2]  # judged before the budget ends the run
    more = budgets.spent(run, [done, flying], budgets.Spent(cpu_s=1.0))
    assert budgets.reached(goal(max_cpu_s=3.0), more).startswith("the CPU budget is spent: 3.0 of 3 CPU seconds")
    assert budgets.reached(goal(), more) is None
    unread = budgets.of_cost(SeedCost(wall_s=7.0))  # its counters could not be read: its wall time counts
    assert (unread.cpu_s, unread.seeds_measured) == (7.0, 0)
