"""`make bench-search`'s simulation core on a tiny problem and budget (seconds): every policy runs
to its end through the planner's own functions and reports the fields the benchmark prints."""

import asyncio

import numpy as np
import pytest
from sklearn import datasets as skd

from benchmarks.bench_search import planner_settings, report, row
from benchmarks.search_sim import Cluster, Problem, Search, Trainer, policies, simulate
from shared.data.datasets import Dataset
from shared.runtime.config import PlannerConfig


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    x, y = skd.make_classification(n_samples=150, n_features=4, n_informative=3, n_redundant=0, n_classes=2,
                                   random_state=0)
    return Dataset("tiny", "tabular", (x * np.array([1, 10, 100, 1000])).astype(np.float32), y.astype(np.int64),
                   ("0", "1"))


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    return Trainer()


def test_replicas_take_jobs_in_dispatch_order():
    cluster = Cluster(replicas=2, overhead_s=0.5)
    assert [cluster.run(0.0, 1.0) for _ in range(3)] == [1.5, 1.5, 3.0]
    assert cluster.run(10.0, 1.0) == 11.5  # an idle replica starts a job when it is dispatched


def test_an_unreachable_target_spends_the_budget_and_new_promotes_from_cheap_rungs(tiny, trainer):
    goal = Problem("tiny", tiny, target=1.0, num_seeds=2, max_epochs=3)
    budget = 30
    new, old, rand = policies()
    searches = {p.name: Search(p, goal, 0, budget, trainer, Cluster(2)) for p in (new, old, rand)}
    outcomes = {name: asyncio.run(s.go()) for name, s in searches.items()}
    for name, o in outcomes.items():
        assert (o.policy, o.problem, o.status) == (name, "tiny", "budget_spent")
        assert not o.reached and o.to_target is None and o.sim_to_target_s is None
        assert 0 < o.spent <= budget and o.candidates >= 1 and o.sim_wall_s > 0
        assert o.best is not None and 0.0 < o.best < 1.0
    # the old policies train every candidate at the full budget; the new one at a cheap rung first
    assert all(h.rung is None and not h.passed for s in ("old", "random") for h in searches[s].records.values())
    first = searches["new"].records[1]
    assert first.ladder[0].epochs == 1 and len(first.ladder[0].seeds) == 1
    assert outcomes["new"].candidates > outcomes["old"].candidates
    assert any(h.passed for h in searches["new"].records.values())  # promoted at least once


def test_a_met_target_ends_the_search_with_its_compute_and_the_figures_report_it(tiny, trainer):
    goal = Problem("tiny", tiny, target=0.5, num_seeds=2, max_epochs=3)
    results = {p.name: [asyncio.run(simulate(p, goal, seed, 30, trainer)) for seed in (0, 1)] for p in policies()}
    for outcomes in results.values():
        for o in outcomes:
            assert o.reached and o.status == "goal_achieved"
            assert 0 < o.to_target <= o.spent <= 30 and o.best >= 0.5
            assert 0 < o.sim_to_target_s <= o.sim_wall_s
    figures = row("new", results["new"])
    assert (figures.reached, figures.runs) == (2, 2) and figures.to_target is not None and figures.real_s > 0
    lines = report(goal, 30, results)
    assert lines[1].split()[:2] == ["new", "2/2"]
    assert any(line.startswith("  new vs old: reached 2 vs 2; where both reached (2 seeds)") for line in lines)
    assert any(line.startswith("  new vs random:") for line in lines)


def test_planner_settings_change_the_new_policy_alone():
    settings = planner_settings("parallel=2, lower_rungs=1,local_share=0")
    assert (settings.parallel, settings.lower_rungs, settings.local_share) == (2, 1, 0.0)
    assert settings.reduction_factor == PlannerConfig().reduction_factor
    new, old, rand = policies(settings)
    assert (new.parallel, new.lower_rungs, new.local_share) == (2, 1, 0.0)
    assert all((p.parallel, p.lower_rungs, p.local_share) == (1, 0, 0.0) for p in (old, rand))
    assert planner_settings("") == PlannerConfig()


@pytest.mark.parametrize("spec, fragment", [
    ("depth=2", "KEY one of parallel, lower_rungs, reduction_factor, local_share"),
    ("parallel", "expected KEY=VALUE"),
    ("lower_rungs=1.5", f"lower_rungs takes an integer, e.g. lower_rungs={PlannerConfig().lower_rungs}"),
    ("local_share=lots", "local_share takes a number"),
    ("parallel=0", "planner.parallel must be 1 to 64"),
])
def test_bad_planner_settings_say_what_to_write(spec, fragment):
    with pytest.raises(SystemExit) as raised:
        planner_settings(spec)
    assert fragment in str(raised.value)
