"""Aggregation over seeds: mean, sample std and a t-distribution confidence interval."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import stats

from shared.registry.records import MetricSummary


def aggregate(values: Iterable[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> MetricSummary:
    """`ci_95` is None with fewer than two values: one seed says nothing about the spread.
    `bounds` clips the interval to a metric's range (accuracy cannot exceed 1)."""
    arr = np.asarray(list(values), dtype=float)
    n = int(arr.size)
    if n == 0:
        return MetricSummary(confidence_level=confidence)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
        if bounds is not None:
            ci = [max(bounds[0], ci[0]), min(bounds[1], ci[1])]
    return MetricSummary(mean=mean, std=std, ci_95=ci, values=[float(v) for v in arr], min=float(arr.min()),
                         max=float(arr.max()), n=n, confidence_level=confidence)


def metric_bounds(name: str) -> tuple[float, float]:
    """The range a metric's interval is clipped to: a loss is never negative, every other
    tracked metric (accuracy, F1, AUC, ...) lies in [0, 1]."""
    return (0.0, math.inf) if name.endswith("loss") else (0.0, 1.0)
