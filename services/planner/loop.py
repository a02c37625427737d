"""The planner's inputs (goals, seed results, dead-lettered jobs) and the runs it drives: one
RunDriver per run whose lease this replica holds (driver.py). A planner that crashes and starts
again continues every run, and every candidate in it, from the last write."""

from __future__ import annotations

import asyncio
import math
import time

import msgspec
import structlog

from services.planner.driver import RunDriver
from services.planner.intake import new_run
from services.planner.leases import RunLeases
from services.planner.llm_guard import LLMGuard
from services.planner.proposers import BuiltinSearch, PlanningLLM
from services.planner.steering import Steering
from services.planner.steps import job_id
from shared.llm.client import LLMClient, llm_settings
from shared.messaging import subjects
from shared.messaging.bus import publish_event, through_outages
from shared.messaging.messages import EvalJob, Event, Goal, SeedResult
from shared.registry.records import RunRecord, unless_ended
from shared.registry.store import Registry
from shared.runtime.config import Config
from shared.runtime.log import bind_run

log = structlog.get_logger()
replace = msgspec.structs.replace


class Planner:
    def __init__(self, nc, js, registry: Registry, config: Config, leases: RunLeases) -> None:
        self.nc, self.js, self.registry, self.config, self.leases = nc, js, registry, config, leases
        self._tasks: dict[str, asyncio.Task] = {}
        self.drivers: dict[str, RunDriver] = {}
        self.steering = Steering(self)  # stop, pause, resume, queue by hand
        planning, tools = llm_settings(config, "planning"), llm_settings(config, "tools")
        self.planning = LLMClient(planning) if planning else None
        self.planning_llm = PlanningLLM(self.planning) if self.planning else None
        self.builtin = BuiltinSearch(config)
        self.guard = LLMGuard(registry, self.event, [s for s in (planning, tools) if s], config.llm.check_timeout_s)
        # the assembler's LLM work can outlast an ordinary step: its calls have llm.step_seconds.code
        # (the summary's are less), and the assembly itself a few seconds
        self.llm_step_timeout_s = max(config.planner.step_timeout_s, config.llm.step_seconds.code + 30) if tools \
            else config.planner.step_timeout_s

    # ---- inputs ----
    async def on_goal(self, goal: Goal) -> None:
        bind_run(goal.run_id)
        # off the loop: a large data set takes seconds to read, and leases and heartbeats must go on
        record = await asyncio.to_thread(new_run, goal, self.config.data)
        if await self.registry.create_run(record):
            log.info("run_created", goal=goal.goal, dataset=goal.dataset, status=record.status)
            await self.event(goal.run_id, "run_started", f"run started: {goal.goal!r} on {goal.dataset}")
            if record.status == "failed":
                await self.event(goal.run_id, "run_finished", f"run failed: {record.error}", data={"status": "failed"})
        await self.ensure_driving(goal.run_id)

    async def on_result(self, result: SeedResult) -> None:
        bind_run(result.run_id, iteration=result.iteration, seed=result.seed)
        unasked = await self._unasked(result)
        if unasked:  # an evaluator may publish results; only the ones for jobs dispatched count
            log.warning("result_ignored", job_id=result.job_id, why=unasked)
            return
        await self.registry.put_seed_result(result)
        headline = f"{result.split}_accuracy"
        accuracy = result.metrics.get(headline)
        outcome = (f"{headline} {'n/a' if accuracy is None else f'{accuracy:.4f}'}" if result.ok
                   else f"failed ({result.reason or 'error'}): {result.error}")
        rung = (" on the test split" if result.split == "test" else
                "" if result.rung is None else f" (rung {result.rung})")
        await self.event(result.run_id, "seed_done", f"candidate {result.iteration}: seed {result.seed}{rung} {outcome}",
                         result.iteration, {"seed": result.seed, "ok": result.ok, "metrics": result.metrics,
                                            "rung": result.rung, "split": result.split, "started_at": result.started_at,
                                            "duration_s": result.duration_s, "evaluator": result.evaluator})
        driver = self.drivers.get(result.run_id)
        if driver is not None:
            driver.notify(result)

    async def _unasked(self, result: SeedResult) -> str | None:
        """Why no job of this run asks for `result` (its id is not the one dispatched, its candidate is
        not training that rung and seed), or None. A job is published before its candidate is marked
        evaluating, so a validated one counts too. A test result counts while its run tests that
        candidate on that seed (final_test.py writes the test before it queues a job)."""
        wanted = job_id(result.run_id, result.iteration, result.seed, result.rung, result.split)
        if result.job_id != wanted or (result.split == "test" and result.rung is not None):
            return f"the job id is not {wanted}"
        if result.split == "test":
            run = await self.registry.get_run(result.run_id)
            test = run.test if run is not None else None
            if test is None or test.finished_at is not None or test.iteration != result.iteration \
                    or result.seed not in test.seeds:
                return f"no test of candidate {result.iteration} on seed {result.seed} is under way"
            return None
        it = await self.registry.get_iteration(result.run_id, result.iteration)
        if it is None:
            return "no such candidate"
        if it.state not in ("validated", "evaluating") or it.rung != result.rung or result.seed not in it.seeds:
            return f"candidate {it.iteration} is {it.state} at rung {it.rung} with seeds {it.seeds}"
        return None

    async def on_dead_job(self, job: EvalJob, deliveries: int) -> None:
        """A seed job JetStream gave up on: a failed seed carrying why, unless a result came after all."""
        bind_run(job.run_id, iteration=job.iteration, seed=job.seed)
        done = await self.registry.seed_results(job.run_id, job.iteration, [job.seed], job.rung, job.split)
        if done.get(job.seed):
            return  # the last evaluator finished it after all; that result stands
        error = (f"dead-lettered after {deliveries} deliveries: no evaluator finished it (each one that took it "
                 "died, stopped, or could not run it: see the run's evaluator_unavailable events); the job is kept on "
                 f"{subjects.dead_job_subject(job.run_id)}")
        await self.on_result(SeedResult(job_id=job.job_id, run_id=job.run_id, iteration=job.iteration, seed=job.seed,
                                        rung=job.rung, split=job.split, ok=False, error=error, reason="dead_letter",
                                        evaluator="dead-letter"))

    async def resume_all(self) -> int:
        """Renew this replica's leases (dropping runs another replica now holds), then claim and
        drive every running run that no live replica holds; -> how many this replica drives."""
        for run_id in await self.leases.renew():
            task = self._tasks.pop(run_id, None)
            if task:
                task.cancel()
        for run_id in await self.registry.running_run_ids():  # an index: not every run record, every scan
            await self.ensure_driving(run_id)
        return sum(1 for task in self._tasks.values() if not task.done())

    async def ensure_driving(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if (task is None or task.done()) and await self.leases.claim(run_id):
            self._tasks[run_id] = asyncio.create_task(self._drive(run_id), name=f"run-{run_id}")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for run_id in list(self._tasks):  # another replica may take them over at once
            await self.leases.release(run_id)
        if self.planning:
            await self.planning.close()

    # ---- driving a run ----
    async def _drive(self, run_id: str) -> None:
        bind_run(run_id)
        driver = self.drivers[run_id] = RunDriver(self, run_id)
        try:
            while True:
                try:
                    # NATS restarting: the pass is redone from the registry once it is back, however long that takes
                    if not await through_outages(driver.step, "run step", give_up_s=math.inf):
                        await self.leases.release(run_id)
                        return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a fault of the machinery: record it, end the run, keep serving
                    log.exception("run_failed")
                    error = f"planner error: {type(exc).__name__}: {exc}"
                    await self.registry.update_run(run_id, unless_ended(lambda r: replace(
                        r, status="failed", error=error, reason=error, finished_at=time.time())))
                    await self.event(run_id, "run_finished", f"run failed: {error}", data={"status": "failed"})
                    return
        finally:
            await driver.close()
            if self.drivers.get(run_id) is driver:
                del self.drivers[run_id]

    # ---- helpers ----
    def num_train(self, run: RunRecord) -> int:
        assert run.dataset_facts is not None
        return run.dataset_facts.num_train(self.config.data.val_fraction, run.goal.subset_size)

    async def event(self, run_id: str, kind: str, message: str, iteration: int | None = None, data: dict | None = None) -> None:
        log.info(kind, message=message, iteration=iteration)  # one readable line; the data is in the registry
        await publish_event(self.nc, Event(run_id=run_id, kind=kind, message=message, iteration=iteration, data=data or {}))
