"""One aggregation of seed results, used by the planner, `researcher evaluate` and `quick-evaluator`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from shared.evaluation.dynamics import analyse_learning
from shared.evaluation.stats import aggregate, metric_bounds
from shared.messaging.messages import SeedResult, lower_is_better
from shared.registry.records import (DEFAULT_METRIC, Evaluation, FinalScores, LearningDynamics, SeedFailure, SeedRow,
                                     oriented)


def summarise(results: Mapping[int, SeedResult], seeds: Sequence[int], *, metrics: Sequence[str] | None = None,
              confidence: float = 0.95, intervals: bool = True, rank_by: str = DEFAULT_METRIC) -> Evaluation:
    """Aggregate every metric (or only `metrics`) over the seeds that succeeded; failed or missing
    seeds are listed, never dropped silently. The best seed is the one best on `rank_by` (the lowest
    for a loss)."""
    ok = {s: r for s, r in results.items() if r.ok}
    names = metrics or sorted({name for r in ok.values() for name, value in r.metrics.items() if value is not None})
    aggregated = {}
    for name in names:
        summary = aggregate((r.metrics[name] for r in ok.values() if r.metrics.get(name) is not None), confidence,
                            metric_bounds(name))
        aggregated[name] = summary if intervals else msgspec.structs.replace(summary, ci_95=None)
    failed = [SeedFailure(seed=s, error=results[s].error, reason=results[s].reason) if s in results
              else SeedFailure(seed=s, error="no result arrived in time", reason="missing")
              for s in seeds if s not in ok]
    lower = lower_is_better(rank_by)
    ranked = lambda s: oriented(ok[s].metrics.get(rank_by), lower)  # noqa: E731
    best_seed = max(ok, key=lambda s: (ranked(s) is not None, ranked(s) or 0.0)) if ok else None
    curves = {str(s): list(r.learning_curve) for s, r in sorted(ok.items())}
    return Evaluation(
        num_seeds=len(seeds),
        aggregated=aggregated,
        failed_seeds=failed,
        best_seed=best_seed,
        final=final_scores(ok[best_seed]) if best_seed is not None else None,
        seed_results=[seed_row(r) for _, r in sorted(results.items())],
        learning_curves=curves,
    )


def final_scores(result: SeedResult) -> FinalScores:
    """One seed's metrics and details as the spec's `final`."""
    return msgspec.convert({**result.metrics, **result.details}, FinalScores)


def seed_row(r: SeedResult) -> SeedRow:
    return SeedRow(seed=r.seed, ok=r.ok, error=r.error, reason=r.reason, metrics=r.metrics, train_time_s=r.train_time_s,
                   samples_per_s=r.samples_per_s, duration_s=r.duration_s, evaluator=r.evaluator, device=r.device,
                   dynamics=dynamics(r) if r.ok else None, started_at=r.started_at, runtime=r.runtime, image=r.image,
                   cost=r.cost)


def dynamics(result: SeedResult) -> LearningDynamics | None:
    """The seed's learning dynamics, from its curve (None without one)."""
    curve = [{k: v for k, v in msgspec.structs.asdict(e).items() if v is not None} for e in result.learning_curve]
    return msgspec.convert(analyse_learning(curve), LearningDynamics) if curve else None
