"""One aggregation of seed results, used by the planner, `researcher evaluate` and `quick-evaluator`."""

from __future__ import annotations

import msgspec

from shared.evaluation.dynamics import analyse_learning
from shared.evaluation.stats import aggregate, metric_bounds
from shared.messaging.messages import SeedResult


def summarise(results: dict[int, SeedResult], seeds: list[int]) -> dict:
    """Aggregate every metric over the seeds that succeeded; failed or missing seeds are listed."""
    ok = {s: r for s, r in results.items() if r.ok}
    names = sorted({name for r in ok.values() for name, value in r.metrics.items() if value is not None})
    aggregated = {name: aggregate([r.metrics[name] for r in ok.values() if r.metrics.get(name) is not None],
                                  bounds=metric_bounds(name)) for name in names}
    failed = [{"seed": s, "error": results[s].error if s in results else "no result arrived in time"}
              for s in seeds if s not in ok]
    best_seed = max(ok, key=lambda s: ok[s].metrics.get("val_accuracy") or 0.0) if ok else None
    curves = {str(s): [{k: v for k, v in msgspec.to_builtins(e).items() if v is not None} for e in r.learning_curve]
              for s, r in sorted(ok.items())}
    return {
        "num_seeds": len(seeds),
        "aggregated": aggregated,
        "failed_seeds": failed,
        "best_seed": best_seed,
        "final": {**ok[best_seed].metrics, **ok[best_seed].details} if best_seed is not None else None,
        "seed_results": [
            {"seed": s, "ok": r.ok, "error": r.error, "metrics": r.metrics, "train_time_s": r.train_time_s,
             "samples_per_s": r.samples_per_s, "duration_s": r.duration_s, "evaluator": r.evaluator, "device": r.device,
             "dynamics": analyse_learning(curves[str(s)]) if r.ok and curves.get(str(s)) else None}
            for s, r in sorted(results.items())
        ],
        "learning_curves": curves,
    }
