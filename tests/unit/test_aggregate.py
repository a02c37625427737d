"""One aggregation of seed results (planner, `researcher evaluate`, `quick-evaluator`), typed."""

import json

import msgspec

from shared.evaluation.aggregate import summarise
from shared.evaluation.metrics import SCALAR_METRICS
from shared.evaluation.stats import aggregate
from shared.messaging.messages import EpochStats, SeedResult
from shared.registry.records import Evaluation, FinalScores

RUN = "run-aggregate"


def seed_result(seed: int, accuracy: float | None, error: str | None = None, curve: list[EpochStats] = (),
                loss: float = 0.5, reason: str | None = None) -> SeedResult:
    """accuracy None: the seed failed with `error`."""
    ok = accuracy is not None
    return SeedResult(job_id=f"{RUN}.it0001.seed{seed}", run_id=RUN, iteration=1, seed=seed, ok=ok,
                      error=None if ok else error, reason=None if ok else reason,
                      metrics={"val_accuracy": accuracy, "val_loss": loss} if ok else {},
                      learning_curve=list(curve), train_time_s=1.0, duration_s=2.0, evaluator="e0")


def test_the_successful_seeds_are_aggregated():
    seeds = [0, 1, 2]
    results = {s: seed_result(s, a, loss=l) for s, a, l in zip(seeds, [0.9, 0.8, 0.85], [1.9, 2.4, 2.0])}
    summary = summarise(results, seeds)
    assert summary.num_seeds == 3 and summary.failed_seeds == []
    assert summary.aggregated["val_accuracy"] == aggregate([0.9, 0.8, 0.85], bounds=(0.0, 1.0))
    assert summary.aggregated["val_loss"] == aggregate([1.9, 2.4, 2.0])  # losses are not clipped to [0, 1]
    assert summary.best_seed == 0
    assert (summary.final.val_accuracy, summary.final.val_loss) == (0.9, 1.9)
    assert [r.seed for r in summary.seed_results] == [0, 1, 2]


def test_failed_and_missing_seeds_are_listed_with_their_reasons():
    results = {0: seed_result(0, 0.9), 1: seed_result(1, None, "RuntimeError: NaN loss", reason="exception")}
    summary = summarise(results, [0, 1, 2])
    assert [(f.seed, f.reason, f.error) for f in summary.failed_seeds] == [
        (1, "exception", "RuntimeError: NaN loss"), (2, "missing", "no result arrived in time")]
    accuracy = summary.summary()
    assert accuracy.n == 1 and accuracy.values == [0.9]
    assert [(r.seed, r.ok, r.error) for r in summary.seed_results] == [(0, True, None), (1, False, "RuntimeError: NaN loss")]


def test_no_successful_seed_has_no_score():
    summary = summarise({0: seed_result(0, None, "timeout")}, [0, 1])
    assert summary.aggregated == {} and summary.best_seed is None and summary.final is None
    assert summary.learning_curves == {}
    assert summary.score("mean") is None and summary.score("ci_lower") is None
    assert [f.seed for f in summary.failed_seeds] == [0, 1]


def test_the_best_seed_is_the_highest_val_accuracy():
    results = {s: seed_result(s, a) for s, a in zip([3, 7, 11], [0.81, 0.88, 0.84])}
    summary = summarise(results, [3, 7, 11])
    assert summary.best_seed == 7 and summary.final.val_accuracy == 0.88


def test_learning_curves_are_keyed_by_seed_and_dynamics_are_typed():
    curve = [EpochStats(epoch=1, train_loss=1.5, train_accuracy=0.4),
             EpochStats(epoch=2, train_loss=0.5, train_accuracy=0.8)]
    results = {0: seed_result(0, 0.8, curve=curve), 5: seed_result(5, 0.82, curve=curve[:1]),
               9: seed_result(9, None, "boom", curve=curve)}
    summary = summarise(results, [0, 5, 9])
    assert summary.learning_curves == {"0": curve, "5": curve[:1]}  # a failed seed's curve is left out
    assert summary.seed_results[0].dynamics.convergence.status in ("converged", "still_improving", "unstable")
    assert summary.seed_results[2].dynamics is None


def test_the_goal_statistic_comes_from_one_method():
    summary = summarise({0: seed_result(0, 0.96), 1: seed_result(1, 0.90)}, [0, 1])
    assert summary.score("mean") == summary.summary().mean
    assert summary.score("ci_lower") == summary.summary().ci_95[0] < summary.score("mean")
    assert summarise({0: seed_result(0, 0.9)}, [0]).score("ci_lower") is None  # one seed: no interval


def test_an_evaluation_is_plain_json_and_decodes_back():
    summary = summarise({0: seed_result(0, 0.9), 1: seed_result(1, 0.8)}, [0, 1])
    data = json.loads(json.dumps(msgspec.to_builtins(summary)))
    assert data["best_seed"] == 0 and data["aggregated"]["val_accuracy"]["n"] == 2
    assert msgspec.convert(data, Evaluation) == summary


def test_final_scores_name_every_scalar_metric():
    assert set(SCALAR_METRICS) <= set(FinalScores.__struct_fields__)
