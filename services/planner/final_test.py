"""A run's end: its best candidate, chosen on validation, trained again over all its seeds and
scored once on the held-out test split, which the search never saw.

Persisted in the run record (`RunRecord.test`) before a job is queued, so a planner that restarts
mid-test finds it and continues: it queues the jobs whose results are missing (a job queued twice
is dropped by its message id, or trains twice into the same key) and waits for them. The run stays
running meanwhile and takes the status it was given once the results are in, or the wait is over.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from services.planner.steps import queue_seed_jobs
from shared.evaluation.aggregate import summarise
from shared.messaging import subjects
from shared.messaging.bus import encode
from shared.messaging.messages import RunEnded
from shared.registry.held_out import untested_why
from shared.registry.records import RunRecord, TestEvaluation, unless_ended

if TYPE_CHECKING:
    from services.planner.driver import RunDriver

replace = msgspec.structs.replace


def goal_test_metric(goal) -> str:
    """The goal's metric on the test split: the best seed of a test evaluation is the best on it."""
    return "test_" + goal.goal_metric.removeprefix("val_")


class FinalTest:
    def __init__(self, driver: "RunDriver") -> None:
        self.d = driver
        self.registry, self.config = driver.registry, driver.config
        self._queued = False  # this driver queued the jobs (a restarted planner queues the missing ones again)

    async def start(self, run: RunRecord, status: str, reason: str) -> bool:
        """Begin testing the best candidate instead of ending now; -> False when the run ends untested
        (an event says why, unless it failed: its own end says that)."""
        if run.test is not None:
            return False
        why = untested_why(run, list(self.d.candidates.values()), status)
        if why is not None:
            if status != "failed":
                await self.d.event("untested", f"the run ends {status} untested on the held-out test split: {why}")
            return False
        best, facts = self.d.candidates[run.best_iteration or 0], run.dataset_facts
        assert facts is not None  # wanted() checked it
        test = TestEvaluation(iteration=best.iteration, seeds=list(best.seeds), status=status,  # type: ignore[arg-type]
                              reason=reason, started_at=time.time())
        self.d.run = await self.d.set_run(unless_ended(lambda r: r if r.test is not None else replace(r, test=test)))
        # the jobs of other candidates still queued need no evaluator now; the test's are kept
        await self.d.planner.nc.publish(subjects.RUN_ENDED_SUBJECT, encode(RunEnded(run_id=run.run_id, status=status,
                                                                                  testing=True)))
        await self.d.event("testing", f"testing candidate {best.iteration} on the held-out test split "
                           f"({facts.test_source}, {facts.num_test} samples) over its {len(best.seeds)} seed(s), "
                           f"before the run ends {status}: {reason}", best.iteration,
                           {"seeds": best.seeds, "status": status})
        return True

    async def step(self, run: RunRecord, stop_asked: str | None) -> None:
        """A pass of the driver while the run is tested."""
        assert run.test is not None
        if run.test.finished_at is not None:  # stored, but the end not yet written (a restart in between)
            await self.d.finish(run.test.status, run.test.reason)
        elif stop_asked is not None:
            await self.abandon(run, stop_asked)
        else:
            await self.advance(run)

    async def advance(self, run: RunRecord) -> None:
        """Queue the test jobs (once per driver), collect their results; once all are in, or the
        wait is over, store the test evaluation and end the run."""
        test = run.test
        assert test is not None
        if not self._queued:
            await self._queue(run, test)
        results = await self.registry.seed_results(run.run_id, test.iteration, test.seeds, None, "test")
        waited = time.time() - test.started_at
        if len(results) < len(test.seeds) and waited <= self.config.planner.eval_timeout_s:
            await self.d.results_arrived(5.0)
            return
        evaluation = summarise(results, test.seeds, rank_by=goal_test_metric(run.goal))
        error = None
        if not evaluation.summary("test_accuracy").n:
            why = "; ".join(f"seed {f.seed}: {f.reason}: {f.error}" for f in evaluation.failed_seeds)
            late = len(results) < len(test.seeds)
            error = (f"no seed of candidate {test.iteration} was scored on the test split"
                     + (f" within planner.eval_timeout_s ({self.config.planner.eval_timeout_s:g} s)" if late else "")
                     + f": {why}")
        await self._close(replace(test, evaluation=evaluation, error=error))

    async def abandon(self, run: RunRecord, why: str) -> None:
        """A stop by hand while testing: the run ends now, its test record saying why it has no figures."""
        assert run.test is not None
        await self._close(replace(run.test, error=f"{why} before the test results were in"), status="stopped",
                          reason=why)

    async def _close(self, test: TestEvaluation, status: str | None = None, reason: str | None = None) -> None:
        test = replace(test, finished_at=time.time())
        self.d.run = await self.d.set_run(unless_ended(lambda r: replace(r, test=test)))
        metric = goal_test_metric(self.d.run.goal) if self.d.run else "test_accuracy"
        measured = test.evaluation.summary(metric) if test.evaluation else None
        if measured is not None and measured.n:
            ci = f" [{measured.ci_95[0]:.4f}, {measured.ci_95[1]:.4f}]" if measured.ci_95 else ""
            line = f"{metric} mean {measured.mean:.4f}{ci} over {measured.n} seed(s)"
        else:
            line = f"no test figures: {test.error}"
        await self.d.event("tested", f"candidate {test.iteration} on the held-out test split: {line}", test.iteration,
                           {metric: msgspec.to_builtins(measured), "metric": metric, "error": test.error})
        await self.d.finish(status or test.status, reason or test.reason)

    async def _queue(self, run: RunRecord, test: TestEvaluation) -> None:
        """The best candidate's full-budget jobs again, predicting the test inputs: same code, recipe and seeds."""
        best = self.d.candidates[test.iteration]
        done = await self.registry.seed_results(run.run_id, test.iteration, test.seeds, None, "test")
        source = (await self.registry.get_artifact(best.code_artifact or "") or b"").decode()
        await queue_seed_jobs(self.d.planner.js, run, best, source, [s for s in test.seeds if s not in done], rung=None,
                              split="test")
        self._queued = True
