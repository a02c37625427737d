"""Steering a run by hand (SteerRequest on STEER_SUBJECT; StopRequest on STOP_SUBJECT from older
CLIs): stop, pause, resume, or queue a config as its next candidate. Every planner replica hears
the request; the one driving the run answers, the others stay silent.

The state lives in the run record (`paused`, `queued`), so a replica that takes the run over keeps
it paused and its queue; each action taken is appended to `RunRecord.steering` and published as
a "steered" event with who asked. A queued config is checked at once, with the checks a planning
LLM's proposal gets (llm_plan.config_problem: the recipe's ranges, and the assembler's own build),
so a broken one is refused in the answer, not found out minutes later in the sandbox.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable

import msgspec
import structlog

from services.planner.llm_plan import complete_config, config_problem
from services.planner.proposers import Proposal
from shared.messaging.messages import (STOP_WAIT_S, TERMINAL_STATUSES, SteerAnswer, SteerRequest, StopAnswer,
                                       StopRequest)
from shared.registry.records import (MAX_BY_CHARS, MAX_QUEUED, MAX_STEERING, QueuedConfig, RunRecord, SteerRecord,
                                     unless_ended)
from shared.runtime.log import bind_run

if TYPE_CHECKING:
    from services.planner.driver import RunDriver
    from services.planner.loop import Planner

log = structlog.get_logger()
replace = msgspec.structs.replace


def queued_proposal(run: RunRecord) -> tuple[Proposal, QueuedConfig] | None:
    """The run's next candidate when a config waits in its queue: the oldest, as it was checked."""
    if not run.queued:
        return None
    first = run.queued[0]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(first.at))
    return Proposal(model_config=first.model_config, proposer="user",
                    reasoning=f"queued by hand by {first.by} at {when}"), first


def taken_from_queue(run: RunRecord, taken: QueuedConfig | None) -> list[QueuedConfig]:
    """The queue once `taken` is a candidate (its time of queuing is its identity)."""
    return [q for q in run.queued if taken is None or q.at != taken.at]


def _steered(run: RunRecord, action: str, by: str, detail: str) -> list[SteerRecord]:
    """The run's steering records with this action's appended (the latest MAX_STEERING)."""
    return [*run.steering, SteerRecord(action=action, by=by, at=time.time(), detail=detail)][-MAX_STEERING:]


class Steering:
    def __init__(self, planner: "Planner") -> None:
        self.planner, self.registry = planner, planner.registry

    async def answer(self, request: SteerRequest) -> SteerAnswer | None:
        """-> the answer of the replica driving the run; None: not this replica's run."""
        driver = self.planner.drivers.get(request.run_id)
        if driver is None:
            return None
        bind_run(request.run_id)
        by = (request.by or f"researcher {request.action}")[:MAX_BY_CHARS]
        log.info("steer_asked", action=request.action, by=by)
        run = await self.registry.get_run(request.run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            status = run.status if run else "unknown"
            return SteerAnswer(run_id=request.run_id, action=request.action, ok=False, status=status,
                               message=f"run {request.run_id} had already ended: {status}")
        if request.action == "stop":
            return await self._stop(driver, request.run_id, by, testing=run.test is not None)
        if run.test is not None:  # ending: what is left is its best candidate's test
            return self._refused(run, request.action, f"run {run.run_id} is ending: its best candidate, "
                                 f"{run.test.iteration}, is being tested on the held-out test split; there is nothing "
                                 f"left to {request.action} (`researcher stop` ends it now, untested)")
        if request.action == "queue":
            return await self._queue(driver, run, request.config, by)
        return await self._pause(driver, run, request.action == "pause", by)

    async def answer_stop(self, request: StopRequest) -> StopAnswer | None:
        """An older CLI's `researcher stop`: the same stop, answered in its own shape."""
        answer = await self.answer(SteerRequest(run_id=request.run_id, action="stop", by=request.by))
        if answer is None:
            return None
        return StopAnswer(run_id=answer.run_id, status=answer.status, message=answer.message, testing=answer.testing)

    # ---- the actions ----
    async def _stop(self, driver: "RunDriver", run_id: str, by: str, testing: bool) -> SteerAnswer:
        """The driver ends the run as stopped at its next pass; answered once it has (or is testing
        its best candidate first), or after STOP_WAIT_S."""
        why = f"stopped by hand ({by})"
        await self._record(run_id, "stop", by, why, lambda r: r)  # the driver's pass ends it
        driver.ask_stop(why)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            run = await self.registry.get_run(run_id)
            if run is not None and run.status in TERMINAL_STATUSES:
                return SteerAnswer(run_id=run_id, action="stop", ok=True, status=run.status,
                                   message=run.reason or why, paused=run.paused, queued=len(run.queued))
            if run is not None and run.test is not None and not testing:
                return SteerAnswer(run_id=run_id, action="stop", ok=True, status="running", testing=True,
                                   paused=run.paused, queued=len(run.queued), message=(
                        f"stopping: its best candidate, {run.test.iteration}, is tested on the held-out test split "
                        "first, then the run ends; stop it again to end it now, untested"))
            await asyncio.sleep(0.1)
        return SteerAnswer(run_id=run_id, action="stop", ok=False, status="running",
                           message="asked to stop; it stops at its next step")

    async def _pause(self, driver: "RunDriver", run: RunRecord, pause: bool, by: str) -> SteerAnswer:
        action = "pause" if pause else "resume"
        if run.paused == pause:
            return self._refused(run, action, f"run {run.run_id} is already paused; `researcher resume` carries it on"
                                 if pause else f"run {run.run_id} is not paused; there is nothing to resume")
        detail = "paused" if pause else "resumed"
        # decided again on the record written: of two pauses at once, one is taken
        # the driver is told in the order the writes happened, before the event's await: of a pause
        # and a resume at once, the driver ends as the record does
        run, taken = await self._record(run.run_id, action, by, detail,
                                        lambda r: replace(r, paused=pause) if r.paused != pause else None,
                                        on_taken=lambda r: driver.hold(r.paused))
        if not taken:
            return self._refused(run, action, f"run {run.run_id} was {detail} by another request meanwhile")
        if pause:  # a promotion or proposal under way when it came is finished first: say which
            await driver.scheduled(STOP_WAIT_S)
        flying = [h.iteration for h in driver.history() if h.in_flight]
        if pause:
            message = ("paused: no candidate starts or is promoted, and the run does not end by its own decisions "
                       "until `researcher resume` (a stop still ends it); "
                       + (f"candidate(s) {', '.join(map(str, flying))} in flight finish and their results are recorded"
                          if flying else "nothing is in flight"))
        else:
            message = "resumed: the search carries on" + (f", {len(run.queued)} config(s) queued by hand first"
                                                          if run.queued else "")
        return SteerAnswer(run_id=run.run_id, action=action, ok=True, status=run.status, message=message,
                           paused=run.paused, queued=len(run.queued))

    async def _queue(self, driver: "RunDriver", run: RunRecord, config: dict | None, by: str) -> SteerAnswer:
        facts = run.dataset_facts
        if not isinstance(config, dict) or not config:
            return self._refused(run, "queue", "a queue needs a model_config: an object with the layers and recipe "
                                 "(README, the model_config format)")
        if facts is None:  # a run whose data could not be read has failed at its start
            return self._refused(run, "queue", f"run {run.run_id} has no data set facts to check a config against")
        if len(run.queued) >= MAX_QUEUED:
            return self._refused(run, "queue", f"run {run.run_id} already has {len(run.queued)} configs queued by "
                                 f"hand, the most it holds; queue more once they have started")
        max_epochs = driver.max_epochs(run)
        completed = complete_config(config, facts, max_epochs)
        # off the loop: building a 200-layer config takes a moment, and leases must go on
        problem = await asyncio.to_thread(config_problem, completed, max_epochs)
        if problem:
            return self._refused(run, "queue", f"config refused: {problem}")
        entry = QueuedConfig(model_config=completed, by=by, at=time.time())
        name = completed.get("class_name") or "a model"
        run, taken = await self._record(run.run_id, "queue", by, f"queued {name} as a next candidate",
                                        lambda r: replace(r, queued=[*r.queued, entry]) if len(r.queued) < MAX_QUEUED
                                        else None)
        if not taken:
            return self._refused(run, "queue", f"run {run.run_id} had {MAX_QUEUED} configs queued by hand meanwhile, "
                                 "the most it holds")
        driver.wake()
        ahead = len(run.queued) - 1
        when = "once the run is resumed" if run.paused else "as soon as a slot is free"
        return SteerAnswer(run_id=run.run_id, action="queue", ok=True, status=run.status, paused=run.paused,
                           queued=len(run.queued), message=f"queued {name}: it becomes a candidate {when}, ahead of "
                           f"the search and the planning LLM" + (f" ({ahead} queued before it)" if ahead else ""))

    # ---- helpers ----
    async def _record(self, run_id: str, action: str, by: str, detail: str,
                      change: Callable[[RunRecord], RunRecord | None],
                      on_taken: Callable[[RunRecord], None] | None = None) -> tuple[RunRecord, bool]:
        """`change` and the steering record in one compare-and-set write, then the "steered" event
        with who; -> (the run, whether it was taken). `change` -> None: not taken on the record
        as it is now (written meanwhile), and nothing is written."""
        taken = True

        def steered(r: RunRecord) -> RunRecord:
            nonlocal taken
            changed = change(r)
            taken = changed is not None
            return replace(changed, steering=_steered(r, action, by, detail)) if changed is not None else r

        run = await self.registry.update_run(run_id, unless_ended(steered))
        taken = taken and run.status not in TERMINAL_STATUSES  # an ended run is as it ended
        if taken and on_taken is not None:
            on_taken(run)
        if taken:
            await self.planner.event(run_id, "steered", f"{action} by {by}: {detail}", data={"action": action, "by": by})
        return run, taken

    @staticmethod
    def _refused(run: RunRecord, action, message: str) -> SteerAnswer:
        return SteerAnswer(run_id=run.run_id, action=action, ok=False, status=run.status, message=message,
                           paused=run.paused, queued=len(run.queued))
