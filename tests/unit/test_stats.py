"""Aggregation over seeds, checked against numbers computed here independently."""

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from shared.evaluation.stats import aggregate

VALUES = [0.91, 0.94, 0.89, 0.93]


def t_interval(values, confidence=0.95):
    n = len(values)
    mean = statistics.fmean(values)
    s = statistics.stdev(values)  # sample std, ddof=1
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * s / math.sqrt(n)
    return mean - half, mean + half


def test_mean_std_min_max_n():
    summary = aggregate(VALUES)
    assert summary.mean == pytest.approx(statistics.fmean(VALUES))
    assert summary.std == pytest.approx(statistics.stdev(VALUES))
    assert summary.min == 0.89
    assert summary.max == 0.94
    assert summary.n == 4
    assert summary.values == VALUES
    assert summary.confidence_level == 0.95


def test_results_are_plain_python_numbers():
    summary = aggregate(VALUES)
    assert type(summary.mean) is float and type(summary.std) is float
    assert type(summary.n) is int
    assert all(type(v) is float for v in summary.values + summary.ci_95)


def test_the_95_interval_uses_the_t_distribution():
    low, high = t_interval(VALUES)
    ci = aggregate(VALUES).ci_95
    assert ci == pytest.approx([low, high])
    # explicitly the 0.975 quantile with n-1 degrees of freedom
    half = scipy_stats.t.ppf(0.975, 3) * statistics.stdev(VALUES) / math.sqrt(4)
    assert ci[1] - ci[0] == pytest.approx(2 * half)


def test_two_values_have_a_wide_interval():
    values = [0.8, 0.9]
    ci = aggregate(values).ci_95
    assert ci == pytest.approx(list(t_interval(values)))
    assert scipy_stats.t.ppf(0.975, 1) > 12  # one degree of freedom: the interval is wide on purpose


def test_other_confidence_levels():
    summary = aggregate(VALUES, confidence=0.9)
    assert summary.ci_95 == pytest.approx(list(t_interval(VALUES, 0.9)))
    assert summary.confidence_level == 0.9


def test_identical_values_give_a_zero_width_interval():
    summary = aggregate([0.5, 0.5, 0.5])
    assert summary.std == 0.0
    assert summary.ci_95 == pytest.approx([0.5, 0.5])


def test_a_single_value_has_no_interval_and_zero_std():
    summary = aggregate([0.87])
    assert summary.mean == 0.87
    assert summary.std == 0.0
    assert summary.ci_95 is None
    assert (summary.min, summary.max, summary.n) == (0.87, 0.87, 1)


def test_empty_input():
    summary = aggregate([])
    assert summary.n == 0
    assert summary.values == []
    assert summary.mean is None and summary.std is None and summary.ci_95 is None
    assert summary.min is None and summary.max is None


def test_accepts_any_iterable_of_numbers():
    assert aggregate(v for v in (1, 2, 3)).mean == 2.0


def test_bounds_clip_the_interval():
    values = [0.99, 1.0, 0.97]
    low, high = t_interval(values)
    assert high > 1.0  # the unclipped interval leaves the metric's range
    clipped = aggregate(values, bounds=(0.0, 1.0)).ci_95
    assert clipped == pytest.approx([low, 1.0])
    assert aggregate([0.01, 0.0, 0.04], bounds=(0.0, 1.0)).ci_95[0] == 0.0


def test_without_bounds_the_interval_is_not_clipped():
    values = [0.99, 1.0, 0.97]
    assert aggregate(values).ci_95[1] == pytest.approx(t_interval(values)[1])


def test_bounds_leave_the_mean_and_std_alone():
    values = [0.99, 1.0, 0.97]
    assert aggregate(values, bounds=(0.0, 1.0)).mean == aggregate(values).mean
    assert aggregate(values, bounds=(0.0, 1.0)).std == aggregate(values).std


def test_goal_statistic_mean():
    summary = aggregate(VALUES)
    assert summary.statistic("mean") == summary.mean


def test_goal_statistic_ci_lower():
    summary = aggregate(VALUES)
    assert summary.statistic("ci_lower") == pytest.approx(t_interval(VALUES)[0])
    assert summary.statistic("ci_lower") < summary.statistic("mean")


def test_goal_statistic_ci_lower_is_none_without_an_interval():
    assert aggregate([0.95]).statistic("ci_lower") is None
    assert aggregate([]).statistic("ci_lower") is None
    assert aggregate([0.95]).statistic("mean") == 0.95
    assert aggregate([]).statistic("mean") is None
