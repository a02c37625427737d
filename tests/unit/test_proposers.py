"""The proposer seam's pure parts: whose turn it is, what a candidate scored where, the incumbent."""

from services.planner.driver import trial_of
from shared.messaging.messages import Goal
from services.planner.proposers import hint, incumbent, llm_turn, progress_score
from shared.evaluation.aggregate import summarise
from shared.messaging.messages import EpochStats, SeedResult
from shared.registry.records import IterationRecord, RungResult, RungSpec

LADDER = [RungSpec(index=0, epochs=2, seeds=[0]), RungSpec(index=None, epochs=6, seeds=[0, 1])]


def evaluation(accuracies: list[float], curve: list[float] = ()):
    seeds = list(range(len(accuracies)))
    results = {s: SeedResult(job_id=f"r.{s}", run_id="r", iteration=1, seed=s, ok=True,
                             metrics={"val_accuracy": a, "val_loss": 1 - a},
                             learning_curve=[EpochStats(epoch=i + 1, train_loss=1.0 - v, train_accuracy=v, val_loss=1.0 - v,
                                                        val_accuracy=v) for i, v in enumerate(curve)])
               for s, a in zip(seeds, accuracies)}
    return summarise(results, seeds)


def candidate(n: int, state: str, rung, accuracies=None, passed=(), curve=()) -> IterationRecord:
    return IterationRecord(run_id="r", iteration=n, state=state, rung=rung, ladder=LADDER,
                           seeds=[0] if rung == 0 else [0, 1], passed=list(passed),
                           evaluation=evaluation(accuracies, curve) if accuracies else None)


def test_the_llm_takes_the_first_candidate_and_its_share_of_the_rest():
    assert [n for n in range(1, 13) if llm_turn(n, 0.25)] == [1, 4, 8, 12]
    assert all(llm_turn(n, 1.0) for n in range(1, 6))
    assert [n for n in range(1, 6) if llm_turn(n, 0.0)] == [1]


def test_scores_come_from_the_highest_rung_finished_and_only_the_full_one_counts():
    cheap = candidate(1, "parked", 0, [0.7])
    promoted = candidate(2, "evaluating", None, passed=[RungResult(index=0, epochs=2, seeds=[0],
                                                                   evaluation=evaluation([0.8]))])
    full = candidate(3, "decided", None, [0.85, 0.87])
    assert progress_score(cheap) == 0.7 and progress_score(promoted) == 0.8
    assert cheap.score("mean") is None and full.score("mean") == 0.86
    goal = Goal(run_id="r", goal="g")
    assert incumbent([cheap, promoted, full], goal).iteration == 3
    assert incumbent([cheap, promoted], goal).iteration == 2  # furthest up the ladder first
    assert trial_of(promoted, goal).in_flight and trial_of(promoted, goal).scores == {0: 0.8}
    assert trial_of(cheap, goal).parked and trial_of(full, goal).closed
    assert promoted.compute() == 2 + 12 and full.compute() == 12  # its full rung is queued: committed


def test_the_hint_follows_most_seeds_curves():
    rising = candidate(1, "decided", None, [0.8, 0.8], curve=[0.5, 0.6, 0.7, 0.75, 0.8, 0.85])
    assert hint(rising) == "still_improving"
    assert hint(candidate(2, "decided", None, [0.8, 0.8])) is None  # no curves: no hint
