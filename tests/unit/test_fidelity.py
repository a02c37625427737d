"""Successive halving and the compute budget (services/planner/fidelity.py): pure logic."""

from services.planner.fidelity import FULL, Rung, Trial, budget_epochs, ladder, plan, promotable, spent
from shared.messaging.messages import Goal
from shared.runtime.config import PlannerConfig


def test_a_ladder_shrinks_epochs_and_seeds_by_the_reduction_factor():
    rungs = ladder(10, 5, lower_rungs=2, eta=3)
    assert [(r.index, r.epochs, len(r.seeds)) for r in rungs] == [(0, 2, 1), (1, 4, 2), (FULL, 10, 5)]
    assert [r.cost for r in rungs] == [2, 8, 50]


def test_a_rung_no_cheaper_than_the_next_is_dropped():
    assert [(r.index, r.epochs, len(r.seeds)) for r in ladder(3, 1, lower_rungs=2, eta=3)] == [(1, 1, 1), (FULL, 3, 1)]
    assert [r.index for r in ladder(1, 1, lower_rungs=2, eta=3)] == [FULL]
    assert [r.index for r in ladder(10, 5, lower_rungs=0, eta=3)] == [FULL]


def test_the_budget_is_the_goals_or_max_iterations_full_evaluations():
    goal = Goal(run_id="r", goal="g", max_iterations=5, num_seeds=5)
    assert budget_epochs(goal, max_epochs=20) == 500
    assert budget_epochs(Goal(run_id="r", goal="g", epoch_budget=77), max_epochs=20) == 77


def trial(n: int, scores: dict, reached: int = 0, in_flight: bool = False, closed: bool = False) -> Trial:
    return Trial(number=n, rungs=ladder(9, 3, lower_rungs=1, eta=3), reached=reached, scores=scores,
                 in_flight=in_flight, closed=closed)


def test_the_top_third_of_a_rung_is_promoted_as_soon_as_it_ranks_there():
    trials = [trial(1, {0: 0.9}), trial(2, {0: 0.5})]
    assert promotable(trials, eta=3) == []  # two finished: floor(2/3) = 0 earn the next rung
    trials.append(trial(3, {0: 0.7}))
    assert [t.number for t in promotable(trials, eta=3)] == [1]
    assert [t.number for t in promotable(trials, eta=3, target=0.6)] == [1, 3]  # a cheap score at the target


def test_a_failed_rung_is_never_promoted_and_a_promoted_one_not_twice():
    trials = [trial(1, {0: None}), trial(2, {0: 0.4}), trial(3, {0: 0.3}), trial(4, {0: 0.9, FULL: 0.91}, reached=1,
                                                                               closed=True)]
    assert [t.number for t in promotable(trials, eta=3)] == []  # 4 is the top third, and it has moved on


def test_plan_promotes_first_then_proposes_within_the_budget_and_its_reserve():
    trials = [trial(1, {0: 0.9}), trial(2, {0: 0.5}), trial(3, {0: 0.7})]
    assert spent(trials) == 3 * 3  # rung 0 is 3 epochs on 1 seed
    chosen = plan(trials, parallel=4, budget=100, new_cost=3, reserve=27, eta=3)
    assert [p.trial.number for p in chosen.promote] == [1] and chosen.propose == 3
    tight = plan(trials, parallel=4, budget=9 + 27 + 3, new_cost=3, reserve=27, eta=3)
    assert [p.trial.number for p in tight.promote] == [1] and tight.propose == 0  # 27 for the promotion leaves 3 < reserve


def test_plan_keeps_the_slots_full_and_no_more():
    flying = [trial(n, {}, in_flight=True) for n in (1, 2, 3)]
    assert plan(flying, parallel=4, budget=1000, new_cost=3, reserve=27, eta=3).propose == 1
    assert spent(flying) == 9  # in flight: committed


def test_the_end_game_promotes_the_best_parked_candidate_that_fits():
    trials = [trial(1, {0: 0.6}), trial(2, {0: 0.8})]  # two: none earns promotion by rank
    chosen = plan(trials, parallel=4, budget=6 + 27, new_cost=3, reserve=27, eta=3)
    assert chosen.forced and [(p.trial.number, p.to.index) for p in chosen.promote] == [(2, FULL)]
    assert plan(trials, parallel=4, budget=6 + 2, new_cost=3, reserve=27, eta=3) == plan(
        trials, parallel=4, budget=6 + 2, new_cost=3, reserve=27, eta=3)
    spent_out = plan(trials, parallel=4, budget=6 + 2, new_cost=3, reserve=27, eta=3)
    assert spent_out.promote == [] and spent_out.propose == 0  # nothing fits: the run ends


def test_sequential_full_budget_is_one_candidate_at_a_time():
    full = [Rung(FULL, 4, (0, 1))]
    done = Trial(number=1, rungs=full, scores={FULL: 0.8}, in_flight=False, closed=True)
    chosen = plan([done], parallel=1, budget=16, new_cost=8, reserve=0, eta=3)
    assert chosen.promote == [] and chosen.propose == 1
    assert plan([done, Trial(number=2, rungs=full)], parallel=1, budget=16, new_cost=8, reserve=0, eta=3).propose == 0


def test_a_promotion_below_the_full_budget_keeps_the_reserve_for_a_full_evaluation():
    three = lambda n, score: Trial(number=n, rungs=ladder(9, 9, lower_rungs=2, eta=3), scores={0: score},
                                   in_flight=False)
    trials = [three(1, 0.9), three(2, 0.5), three(3, 0.7)]  # rung 0: 1 epoch, 1 seed; rung 1: 3 epochs, 3 seeds
    assert [p.to.index for p in plan(trials, parallel=4, budget=3 + 9 + 81, new_cost=1, reserve=81, eta=3).promote] == [1]
    short = plan(trials, parallel=4, budget=3 + 81, new_cost=1, reserve=81, eta=3)
    assert short.forced and [(p.trial.number, p.to.index) for p in short.promote] == [(1, FULL)]  # straight to full


def test_every_run_that_can_afford_a_full_evaluation_ends_with_one():
    """Played out against scores that never meet the target: whatever the budget, once nothing
    more fits, a full evaluation was made if one full candidate's cost fitted the budget."""
    for budget in range(30, 400, 7):
        trials: list[Trial] = []
        while True:
            chosen = plan(trials, parallel=4, budget=budget, new_cost=3, reserve=27, eta=3)
            if not chosen.promote and not chosen.propose:
                break
            for p in chosen.promote:
                p.trial.reached = p.trial.rungs.index(p.to)
                p.trial.scores[p.to.index] = 0.5
                p.trial.closed = p.to.index is FULL
            for _ in range(chosen.propose):
                n = len(trials) + 1
                trials.append(Trial(number=n, rungs=ladder(9, 3, lower_rungs=1, eta=3), scores={0: 0.1 * (n % 7)},
                                    in_flight=False))
        assert spent(trials) <= budget
        assert any(t.scores.get(FULL) is not None for t in trials), budget


def test_the_defaults_screen_every_candidate_on_a_cheaper_rung_first():
    defaults = PlannerConfig()
    rungs = ladder(defaults.max_epochs, 2, defaults.lower_rungs, defaults.reduction_factor)
    assert len(rungs) == defaults.lower_rungs + 1 and rungs[-1].index is FULL
    assert all(a.cost < b.cost for a, b in zip(rungs, rungs[1:]))
