"""Planner service: consumes goals and per-seed results, drives every run to its report."""

from __future__ import annotations

import asyncio

import structlog

from services.planner.dead_letters import DeadLetters
from services.planner.leases import RENEW_S, RunLeases
from services.planner.intake import Intake
from services.planner.loop import Planner
from shared.messaging import subjects
from shared.messaging.consumer import Delivery
from shared.errors import MessageError
from shared.messaging.bus import decode, encode
from shared.messaging.messages import ErrorReply, Goal, MaxDeliveriesAdvisory, SeedResult, SteerRequest, StopRequest
from shared.registry.store import Registry
from shared.runtime.config import Config, replica_name
from shared.runtime.service import Service

log = structlog.get_logger()


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    async with Service("planner", config, stop=stop) as service:
        await service.connect(nc, jetstream=True, declare=True)
        js, settings = service.js, service.config.planner
        leases = await RunLeases.open(js, owner=f"planner-{replica_name()}")
        planner = Planner(service.nc, js, await Registry.open(js), service.config, leases)
        service.on_stop(planner.stop)

        intake = Intake(js, planner)
        await service.responder(settings.submit_concurrency).serve(
            subjects.GOAL_SUBMIT_SUBJECT, subjects.PLANNER_QUEUE, Goal, intake.submit, unanswered=intake.unanswered)

        steering: set[asyncio.Task] = set()

        def answering(type_, handle):
            """A request every replica hears; the one driving the run answers (each in a task of its
            own: a stop waits up to STOP_WAIT_S for its run to end)."""
            async def answer(msg) -> None:
                try:
                    request = decode(msg.data, type_, msg.subject)
                except MessageError as exc:
                    log.warning("rejected_message", error=str(exc))
                    if msg.reply:
                        await msg.respond(encode(ErrorReply(error=str(exc))))
                    return
                try:
                    reply = await handle(request)
                except Exception as exc:  # noqa: BLE001 - said to the asker, who would otherwise hear "no planner"
                    log.error("steer_failed", error=f"{type(exc).__name__}: {exc}", run_id=request.run_id)
                    reply = ErrorReply(error=f"the planner driving run {request.run_id} could not do it: "
                                             f"{type(exc).__name__}: {exc}")
                if reply is not None and msg.reply:
                    await msg.respond(encode(reply))

            async def on_request(msg) -> None:
                task = asyncio.create_task(answer(msg))
                steering.add(task)
                task.add_done_callback(steering.discard)
            return on_request

        await service.nc.subscribe(subjects.STEER_SUBJECT, cb=answering(SteerRequest, planner.steering.answer))
        await service.nc.subscribe(subjects.STOP_SUBJECT, cb=answering(StopRequest, planner.steering.answer_stop))

        async def on_result(result: SeedResult, delivery: Delivery) -> None:
            await planner.on_result(result)

        consumer = dict(ack_wait_s=settings.ack_wait_s, max_deliver=settings.max_deliver,
                        fetch_batch=settings.fetch_batch, nak_delay_s=settings.nak_delay_s)
        await service.consume(stream=subjects.GOALS_STREAM, subject=subjects.GOALS_SUBJECT,
                              durable=subjects.GOALS_CONSUMER, type_=Goal, handle=intake.on_published,
                              on_malformed=intake.on_malformed, **consumer)
        await service.consume(stream=subjects.RESULTS_STREAM, subject=f"{subjects.RESULTS_SUBJECT_PREFIX}.>",
                              durable=subjects.RESULTS_CONSUMER, type_=SeedResult, handle=on_result, **consumer)
        await service.consume(stream=subjects.ADVISORIES_STREAM, subject=subjects.EVAL_MAX_DELIVERIES_ADVISORY,
                              durable=subjects.DEAD_LETTERS_CONSUMER, type_=MaxDeliveriesAdvisory,
                              handle=DeadLetters(js, planner), **consumer)
        # leases renewed, and runs left by a crashed planner taken over (once their leases expire):
        # at start and every few seconds, which also catches what a listing at start-up missed
        service.every(RENEW_S, planner.resume_all, "rescan")
        await service.run(resumed_runs=await planner.resume_all())


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
