"""Successive halving's pure logic (services/planner/fidelity.py): the ladders its docstring and the
README describe, ASHA's promotions, and what a plan starts within the budget."""

from services.planner.fidelity import FULL, Rung, Trial, ladder, plan, promotable, spent
from shared.runtime.config import PlannerConfig


def shape(rungs: list[Rung]) -> list[tuple[int | None, int, int]]:
    return [(r.index, r.epochs, len(r.seeds)) for r in rungs]


def test_ladders_shrink_epochs_and_seeds_by_eta_per_rung():
    assert shape(ladder(10, 5, lower_rungs=2, eta=3)) == [(0, 2, 1), (1, 4, 2), (FULL, 10, 5)]
    assert shape(ladder(20, 2, lower_rungs=1, eta=3)) == [(0, 7, 1), (FULL, 20, 2)]
    assert shape(ladder(20, 2, lower_rungs=1, eta=2)) == [(0, 10, 1), (FULL, 20, 2)]
    assert shape(ladder(10, 5, lower_rungs=0, eta=3)) == [(FULL, 10, 5)]


def test_a_rung_no_cheaper_than_the_one_above_is_dropped():
    # rung 0 would cost as much as rung 1: the candidate starts at rung 1 (a third of its training),
    # where it is ranked with the others at a third of theirs
    assert shape(ladder(3, 1, lower_rungs=2, eta=3)) == [(1, 1, 1), (FULL, 3, 1)]
    assert shape(ladder(1, 1, lower_rungs=2, eta=3)) == [(FULL, 1, 1)]


def test_the_defaults_screen_every_candidate_on_a_cheaper_rung_first():
    defaults = PlannerConfig()
    rungs = ladder(defaults.max_epochs, 2, defaults.lower_rungs, defaults.reduction_factor)
    assert len(rungs) == defaults.lower_rungs + 1 and rungs[-1].index is FULL
    assert all(a.cost < b.cost for a, b in zip(rungs, rungs[1:]))


def parked(number: int, score: float, rungs: list[Rung]) -> Trial:
    return Trial(number=number, rungs=rungs, scores={0: score}, in_flight=False)


def test_the_best_third_earn_the_next_rung_and_a_target_met_cheaply_is_promoted_at_once():
    rungs = ladder(9, 3, lower_rungs=1, eta=3)  # rung 0: 3 epochs on 1 seed
    trials = [parked(n, s, rungs) for n, s in enumerate([0.5, 0.9, 0.6, 0.7, 0.55, 0.8], start=1)]
    assert [t.number for t in promotable(trials, eta=3)] == [2, 6]  # 6 // 3 = 2 of them
    assert [t.number for t in promotable(trials, eta=3, target=0.7)] == [2, 6, 4]


def test_a_plan_promotes_first_then_proposes_while_the_budget_keeps_the_reserve():
    rungs = ladder(9, 3, lower_rungs=1, eta=3)  # costs 3, then 27
    trials = [parked(n, s, rungs) for n, s in enumerate([0.5, 0.9, 0.6], start=1)]
    assert spent(trials) == 9
    step = plan(trials, parallel=4, budget=100, new_cost=3, reserve=27, eta=3)
    assert [t.number for t in step.promote] == [2] and step.propose == 3 and not step.forced
    # 9 spent and 27 promoted leave 30 of 66; 27 are kept back for a promotion to come: one new candidate fits
    assert plan(trials, parallel=4, budget=66, new_cost=3, reserve=27, eta=3).propose == 1
    tight = plan(trials, parallel=4, budget=36, new_cost=3, reserve=27, eta=3)
    assert [t.number for t in tight.promote] == [2] and tight.propose == 0


def test_with_nothing_in_flight_the_end_game_spends_what_is_left_on_the_best_parked():
    rungs = ladder(9, 3, lower_rungs=1, eta=3)
    trials = [parked(n, s, rungs) for n, s in enumerate([0.5, 0.6], start=1)]  # 2 // 3 = 0 earn it
    step = plan(trials, parallel=4, budget=6 + 27, new_cost=3, reserve=27, eta=3)
    assert step.forced and [t.number for t in step.promote] == [2] and step.propose == 0
