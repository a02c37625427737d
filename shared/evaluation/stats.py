"""Aggregation over seeds: mean, sample std and a t-distribution confidence interval."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def aggregate(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """`ci_95` is None with fewer than two values: one seed says nothing about the spread.
    `bounds` clips the interval to a metric's range (accuracy cannot exceed 1)."""
    arr = np.asarray(list(values), dtype=float)
    n = int(arr.size)
    if n == 0:
        return {"mean": None, "std": None, "ci_95": None, "values": [], "min": None, "max": None, "n": 0}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
        if bounds is not None:
            ci = [max(bounds[0], ci[0]), min(bounds[1], ci[1])]
    return {"mean": mean, "std": std, "ci_95": ci, "values": [float(v) for v in arr],
            "min": float(arr.min()), "max": float(arr.max()), "n": n, "confidence_level": confidence}


def metric_bounds(name: str) -> tuple[float, float]:
    """The range a metric's interval is clipped to: a loss is never negative, every other
    tracked metric (accuracy, F1, AUC, ...) lies in [0, 1]."""
    return (0.0, math.inf) if name.endswith("loss") else (0.0, 1.0)


def goal_statistic(summary: dict, statistic: str) -> float | None:
    """The number a goal is judged on: the mean, or the lower bound of the interval."""
    if statistic == "ci_lower":
        return summary["ci_95"][0] if summary.get("ci_95") else None
    return summary.get("mean")
