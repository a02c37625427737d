"""Goals come in two ways: submitted as a request (a planner checks it and answers at once) or
published on the GOALS stream by any client. Both are checked alike, and a bad goal is never
dropped in silence: a published one becomes a failed run that says why, so `researcher report`
and the run's events answer for it. A goal whose data the stack cannot read (files missing
from data.dir, a CSV path outside it) is refused here too, saying where the stack looked."""

from __future__ import annotations

import asyncio
import time

import msgspec
import structlog

from shared.data.catalog import check_goal
from shared.data.datasets import load_dataset, with_test_split
from shared.data.files import STACK_HINT, with_hint
from shared.llm.check import unconfigured_problem
from shared.errors import DatasetError, MessageError
from shared.messaging import subjects
from shared.messaging.limits import cap_problems, facts_problem
from shared.messaging.bus import encode, publish_to_stream, through_outages
from shared.messaging.consumer import Delivery
from shared.messaging.messages import RUN_ID, Goal, GoalAnswer
from shared.registry.records import RunRecord
from shared.runtime.config import DataConfig
from shared.runtime.log import bind_run

log = structlog.get_logger()


def new_run(goal: Goal, data: DataConfig) -> RunRecord:
    """A taken goal's run record, with its data set's facts; or failed, saying why they could not
    be had. Reads the data set: blocking, for a thread."""
    record = RunRecord(run_id=goal.run_id, goal=goal)
    try:
        # the facts of the pool the search draws from, and of the test split it never sees
        record.dataset_facts = with_test_split(load_dataset(goal.dataset, data_dir=data.dir, config=data,
                                                            max_categories=data.max_categories), data.test_fraction,
                                               data.test_seed).facts()
    except DatasetError as exc:
        record.status, record.error, record.finished_at = "failed", with_hint(exc, STACK_HINT), time.time()
    except Exception as exc:  # noqa: BLE001 - a loader's own fault still ends the run with its reason, never a hang
        log.exception("dataset_unreadable")
        record.status, record.finished_at = "failed", time.time()
        record.error = f"data set {goal.dataset!r} could not be read: {type(exc).__name__}: {exc}"
    else:
        too_many = facts_problem(record.dataset_facts.num_classes, record.dataset_facts.class_names)
        if too_many:
            record.status, record.finished_at = "failed", time.time()
            record.error = f"goal rejected: data set {goal.dataset!r}: {too_many}"
            return record
        least = record.dataset_facts.smallest_subset(data.val_fraction)
        if goal.subset_size is not None and goal.subset_size < least:
            record.status, record.finished_at = "failed", time.time()
            record.error = (f"goal rejected: subset_size {goal.subset_size} is too small for {goal.dataset} "
                            f"({record.dataset_facts.num_classes} classes, validation share {data.val_fraction:g}): "
                            "every class needs a sample on both sides of the split, so subset_size must be at "
                            f"least {least}")
    return record


class _Named(msgspec.Struct):
    """What a malformed goal may still tell: the run it was meant to be."""

    run_id: str


class Intake:
    def __init__(self, js, planner) -> None:
        self.js, self.planner = js, planner

    async def problems(self, goal: Goal) -> list[str]:
        """check_goal against the data directory this planner reads: off the loop, as a CSV's
        header row may come from a slow disk; this stack's caps (limits); and what this planner's
        LLM configuration cannot give it."""
        config = self.planner.config
        problems = await asyncio.to_thread(check_goal, goal, config.data.dir, STACK_HINT)
        problems += cap_problems(goal, config.limits, config.planner.max_epochs)
        llm = unconfigured_problem(goal.require_llm, self.planner.guard.roles)
        return [*problems, llm] if llm else problems

    async def submit(self, goal: Goal) -> GoalAnswer:
        """A submitted goal: rejected with every problem, or queued on GOALS (durably) and accepted."""
        bind_run(goal.run_id)
        problems = await self.problems(goal)
        if problems:
            log.info("goal_rejected", problems=problems)
            return GoalAnswer(run_id=goal.run_id, accepted=False, problems=problems)
        # the run id is the message id: a goal submitted twice is queued once
        await through_outages(lambda: publish_to_stream(self.js, subjects.GOALS_SUBJECT, encode(goal),
                                                             headers={"Nats-Msg-Id": goal.run_id}), "queue goal")
        log.info("goal_accepted", goal=goal.goal, dataset=goal.dataset)
        return GoalAnswer(run_id=goal.run_id, accepted=True)

    async def unanswered(self, goal: Goal, answer) -> None:
        """A goal sent to the submit subject with no reply subject: a rejection cannot be told, so
        it becomes a failed run, as a published one does (an accepted one is queued as usual)."""
        if isinstance(answer, GoalAnswer) and not answer.accepted:
            if RUN_ID.match(goal.run_id):
                await self.fail(goal, "goal rejected: " + answer.error)
            else:
                log.warning("goal_rejected_unanswered", error=answer.error)

    async def on_published(self, goal: Goal, delivery: Delivery) -> None:
        """A goal from the GOALS stream: a run, or a failed run saying why it could not be one."""
        problems = await self.problems(goal)
        if problems and not RUN_ID.match(goal.run_id):  # no run can carry it: logged and dropped
            raise MessageError("Goal", "; ".join(problems), subjects.GOALS_SUBJECT)
        if problems:
            await self.fail(goal, "goal rejected: " + "; ".join(problems))
            return
        await self.planner.on_goal(goal)

    async def on_malformed(self, data: bytes, exc: MessageError) -> None:
        """A published goal that does not decode: a failed run when it still names a usable run id;
        otherwise `exc` again (there is nothing to attach it to: the consumer logs and drops it)."""
        try:
            run_id = msgspec.json.decode(data, type=_Named).run_id
        except (msgspec.ValidationError, msgspec.DecodeError):
            run_id = ""
        if not RUN_ID.match(run_id):
            raise exc
        await self.fail(Goal(run_id=run_id, goal="(a malformed goal)", dataset=""), f"goal rejected: {exc}")

    async def fail(self, goal: Goal, error: str) -> None:
        bind_run(goal.run_id)
        log.warning("goal_rejected", error=error)
        record = RunRecord(run_id=goal.run_id, goal=goal, status="failed", error=error, finished_at=time.time())
        if await self.planner.registry.create_run(record):
            await self.planner.event(goal.run_id, "run_finished", f"run failed: {error}", data={"status": "failed"})
