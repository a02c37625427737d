"""The report's test section: the best candidate, chosen on validation, on the held-out test split
the search never saw, beside its validation figures. The test figures lead: after many candidates
the best validation score is biased upward by the choice itself (the winner's curse); the test
score of the one chosen is not."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.messaging.messages import TERMINAL_STATUSES
from shared.registry.records import IterationRecord, MetricSummary, RunRecord

# the metrics shown side by side in the text (every one is in the JSON), as "val_" / "test_" + name
SIDE_BY_SIDE = ("accuracy", "balanced_accuracy", "f1_macro", "loss", "roc_auc")


def _source(run: RunRecord) -> str:
    facts = run.dataset_facts
    if facts is None or not facts.test_source:
        return "no test split"
    kind = "its official test files" if facts.test_source == "official" else "held out of its training files"
    return f"{facts.num_test:,} samples, {kind}"


def untested_why(run: RunRecord, iterations: list[IterationRecord], status: str) -> str | None:
    """Why a run ending with `status` is not tested, or None: it has a best candidate measured at
    the full budget, a test split, and an end that is not a failure."""
    best = next((it for it in iterations if it.iteration == run.best_iteration), None)
    if status == "failed":
        return "the run failed"
    if best is None or best.evaluation is None or not best.evaluation.summary().n:
        return "no candidate was evaluated at the full budget (a cheap rung's result is never tested)"
    if run.dataset_facts is None or not run.dataset_facts.num_test:
        return "its data set has no test split (a run started before test splits)"
    return None


def held_out_section(run: RunRecord, iterations: list[IterationRecord]) -> dict[str, Any] | None:
    """The JSON report's "test": None while the run goes on; for an ended run not tested, why."""
    test = run.test
    if test is None:
        why = untested_why(run, iterations, run.status) if run.status in TERMINAL_STATUSES else None
        return None if why is None else {"state": "untested", "why": why, "selected_on": "validation"}
    chosen = next((it for it in iterations if it.iteration == test.iteration), None)
    val = chosen.evaluation if chosen is not None else None
    evaluation = test.evaluation
    names = sorted({n.removeprefix("val_") for n in (val.aggregated if val else {})}
                   | {n.removeprefix("test_") for n in (evaluation.aggregated if evaluation else {})})
    facts = run.dataset_facts
    return {
        "iteration": test.iteration,
        "selected_on": "validation",  # the search chose the candidate on validation; test was never searched on
        "state": _state(run),
        "error": test.error,
        "source": facts.test_source if facts else "",
        "num_test": facts.num_test if facts else 0,
        "note": facts.test_note if facts else "",
        "seeds": test.seeds,
        # per metric: the candidate's validation and test statistics over its seeds, side by side
        "metrics": {name: {"validation": msgspec.to_builtins(val.summary(f"val_{name}")) if val else None,
                           "test": msgspec.to_builtins(evaluation.summary(f"test_{name}")) if evaluation else None}
                    for name in names},
        "evaluation": msgspec.to_builtins(evaluation),
        "started_at": test.started_at,
        "finished_at": test.finished_at,
    }


def _state(run: RunRecord) -> str:
    """tested | failed (no figures, test.error says why) | testing | unfinished (the run ended
    without the planner: an interrupted `researcher run` records its run stopped)."""
    test = run.test
    assert test is not None
    if test.error:
        return "failed"
    if test.finished_at is not None:
        return "tested"
    return "unfinished" if run.status in TERMINAL_STATUSES else "testing"


def _figure(summary: MetricSummary | None) -> str:
    if summary is None or not summary.n or summary.mean is None:
        return "n/a"
    ci = f" [{summary.ci_95[0]:.4f}, {summary.ci_95[1]:.4f}]" if summary.ci_95 else ""
    return f"{summary.mean:.4f} ± {summary.std or 0.0:.4f}{ci} (n={summary.n})"


def format_held_out(run: RunRecord, iterations: list[IterationRecord]) -> list[str]:
    """The text report's opening lines on the test split; [] when the run was not tested."""
    test = run.test
    if test is None:
        why = untested_why(run, iterations, run.status) if run.status in TERMINAL_STATUSES else None
        return [] if why is None else [f"test split: not tested: {why}", ""]
    head = f"test split ({_source(run)}; never seen by the search): candidate {test.iteration}, chosen on validation"
    state = _state(run)
    if state == "testing":
        return [head, f"  testing: over its {len(test.seeds)} seed(s); the run ends {test.status} once the results are in", ""]
    if state == "unfinished":
        return [head, f"  the test was not finished: the run was ended {run.status} before its results were in", ""]
    if test.error:
        return [head, f"  the test could not be done: {test.error}", ""]
    chosen = next((it for it in iterations if it.iteration == test.iteration), None)
    val = chosen.evaluation if chosen is not None else None
    lines = [head, f"  {'metric':<20} {'test (reported)':<40} validation (used for selection)"]
    goal_name = run.goal.goal_metric.removeprefix("val_")
    for name in [goal_name, *(n for n in SIDE_BY_SIDE if n != goal_name)]:  # the goal's metric first
        tested = test.evaluation.summary(f"test_{name}") if test.evaluation else None
        if tested is None or not tested.n:
            continue
        label = f"{name} (goal)" if name == goal_name else name
        lines.append(f"  {label:<20} {_figure(tested):<40} {_figure(val.summary(f'val_{name}') if val else None)}")
    note = run.dataset_facts.test_note if run.dataset_facts else ""
    return lines + ([f"  note: {note}"] if note else []) + [""]
