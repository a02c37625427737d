"""The dashboard's figures: a run's comparisons of candidates, and a candidate's own plots.

A candidate's plots are the PNGs the planner stored with its evaluation (the export's files); where
there are none yet (a cheap rung, a record from before plots), they are drawn from its records with
the same functions. Drawing happens in a worker thread, one figure at a time (matplotlib's Figure
API needs no GUI, but one process's figures are drawn one by one), and a run's comparison figures
are kept until one of its candidates changes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

from shared.evaluation.plots import accuracy_vs_compute_png, evaluation_plots, score_over_time_png
from shared.registry.costs import compute_points
from shared.registry.leaderboard import latest
from shared.registry.records import IterationRecord, RunRecord
from services.dashboard.records import Records

KEPT = 128  # figures kept (the oldest drawn out first)


class Figures:
    RUN_PLOTS = ("compute", "timeline")

    def __init__(self, records: Records) -> None:
        self.records = records
        self._kept: dict[tuple, bytes] = {}
        self._drawing = threading.Lock()

    async def _draw(self, draw: Callable[[], bytes]) -> bytes:
        def locked() -> bytes:
            with self._drawing:
                return draw()
        return await asyncio.to_thread(locked)

    def run_plot(self, which: str, run: RunRecord, iterations: list[IterationRecord]) -> Callable[[], bytes]:
        metric, lower = run.goal.goal_metric, run.goal.lower_is_better
        if which == "compute":
            points, axis = compute_points(iterations, metric)
            return lambda: accuracy_vs_compute_png(points, metric=metric, axis=axis,
                                                   title=f"{metric} against compute, run {run.run_id}")
        timed = []  # every rung each candidate finished, at the time its last seed came in
        for it in iterations:
            measured = [(p.evaluation, p.finished_at, False) for p in it.passed if p.evaluation is not None]
            if it.evaluation is not None:
                measured.append((it.evaluation, it.finished_at or _last_seed(it.evaluation), it.rung is None))
            for evaluation, at, full in measured:
                mean = evaluation.summary(metric).mean
                if mean is not None and at:
                    timed.append((it.iteration, (at - run.created_at) / 60, mean, full))
        return lambda: score_over_time_png(timed, metric=metric, lower=lower, title=f"{metric} over time, run {run.run_id}")

    async def run_figure(self, which: str, run: RunRecord, iterations: list[IterationRecord]) -> bytes:
        key = (run.run_id, which, tuple((it.iteration, it.state, it.rung, it.finished_at) for it in iterations))
        if key not in self._kept:
            self._keep(key, await self._draw(self.run_plot(which, run, iterations)))
        return self._kept[key]

    async def candidate_plot(self, name: str, run: RunRecord, it: IterationRecord) -> bytes | None:
        evaluation = latest(it)
        if evaluation is None:
            return None
        stored = evaluation.plots.get(name)
        if stored is not None:
            data = await self.records.artifact(stored)
            if data is not None:
                return data
        key = (run.run_id, it.iteration, name, it.state, it.rung, len(it.passed), it.finished_at)
        if key not in self._kept:
            names = run.dataset_facts.class_names if run.dataset_facts else []
            drawn = evaluation_plots(evaluation, names, f"candidate {it.iteration}").get(name)
            if drawn is None:
                return None
            self._keep(key, await self._draw(drawn))
        return self._kept[key]

    def _keep(self, key: tuple, data: bytes) -> None:
        if len(self._kept) >= KEPT:
            self._kept.pop(next(iter(self._kept)))
        self._kept[key] = data


def _last_seed(evaluation) -> float | None:
    """When an evaluation's last seed finished (its evaluator's clock), for a rung not closed yet."""
    ends = [row.started_at + row.duration_s for row in evaluation.seed_results if row.started_at]
    return max(ends) if ends else None
