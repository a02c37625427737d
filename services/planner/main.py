"""Planner service: consumes goals and per-seed results, drives every run to its report."""

from __future__ import annotations

import asyncio

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from services.planner.leases import RENEW_S, RunLeases
from services.planner.intake import Intake
from services.planner.loop import Planner
from shared.messaging import subjects
from shared.messaging.bus import Responder, connect, decode, ensure_streams, settle, stop_event
from shared.runtime.config import Config, load_config, replica_name
from shared.errors import MessageError
from shared.runtime.log import configure_logging
from shared.runtime.health import beat
from shared.messaging.messages import EvalJob, Goal, MaxDeliveriesAdvisory, SeedResult
from shared.registry.store import Registry

log = structlog.get_logger()
async def consume(js, stream: str, subject: str, durable: str, handle, stop: asyncio.Event, ack_wait: float = 60.0) -> None:
    """Pull messages one by one; a handler that raises leaves the message for redelivery."""
    psub = await js.pull_subscribe(subject, durable=durable, stream=stream,
                                   config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=5))
    while not stop.is_set():
        try:
            msgs = await psub.fetch(8, timeout=1.0)
        except (NatsTimeoutError, asyncio.TimeoutError):
            continue
        except Exception as exc:  # reconnecting
            log.warning("fetch_failed", stream=stream, error=str(exc))
            await asyncio.sleep(1.0)
            continue
        for msg in msgs:
            try:
                await handle(msg)
            except MessageError as exc:
                log.warning("rejected_message", error=str(exc))
                await settle(msg, "term")
            except Exception:
                log.exception("handler_failed", stream=stream)
                await settle(msg, "nak", delay=2)
            else:
                await settle(msg, "ack")


async def main(nc=None, config: Config | None = None, stop: asyncio.Event | None = None) -> None:
    config = config or load_config()
    configure_logging("planner", config.log_level)
    nc = nc or await connect(config.nats_url, "planner")
    js = nc.jetstream()
    await ensure_streams(js)
    leases = await RunLeases.open(js, owner=f"planner-{replica_name()}")
    planner = Planner(nc, js, await Registry.open(js), config, leases)
    stop = stop or stop_event()

    intake = Intake(js, planner)
    responder = Responder(nc, config.planner.submit_concurrency)
    await responder.serve(subjects.GOAL_SUBMIT_SUBJECT, subjects.PLANNER_QUEUE, Goal, intake.submit)

    async def on_result(msg) -> None:
        await planner.on_result(decode(msg.data, SeedResult, msg.subject))

    async def on_dead_letter(msg) -> None:
        """A job past max_deliver: keep it on the dead-letter subject, fail its seed, take it off the queue."""
        advisory = decode(msg.data, MaxDeliveriesAdvisory, msg.subject)
        try:
            raw = await js.get_msg(subjects.EVAL_STREAM, advisory.stream_seq)
        except NotFoundError:
            return  # handled before (a redelivered advisory)
        job = decode(raw.data, EvalJob, subjects.EVAL_SUBJECT)
        await js.publish(subjects.dead_job_subject(job.run_id), raw.data, headers={
            "Nats-Msg-Id": f"dead.{job.job_id}", "Researcher-Deliveries": str(advisory.deliveries)})
        log.warning("job_dead_lettered", run_id=job.run_id, job_id=job.job_id, deliveries=advisory.deliveries)
        await planner.on_dead_job(job, advisory.deliveries)
        try:
            await js.delete_msg(subjects.EVAL_STREAM, advisory.stream_seq)
        except NotFoundError:
            pass

    async def rescan() -> None:
        # leases renewed, and runs left by a crashed planner taken over (once their leases expire):
        # at start and every few seconds, which also catches what a listing at start-up missed
        while not stop.is_set():
            try:
                await planner.resume_all()
            except Exception as exc:  # NATS reconnecting: try again next round
                log.warning("rescan_failed", error=str(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=RENEW_S)
            except asyncio.TimeoutError:
                pass

    resumed = await planner.resume_all()
    log.info("planner_ready", resumed_runs=resumed)
    await asyncio.gather(
        rescan(),
        consume(js, subjects.GOALS_STREAM, subjects.GOALS_SUBJECT, subjects.GOALS_CONSUMER, intake.on_published, stop),
        consume(js, subjects.RESULTS_STREAM, f"{subjects.RESULTS_SUBJECT_PREFIX}.>", subjects.RESULTS_CONSUMER, on_result, stop),
        consume(js, subjects.ADVISORIES_STREAM, subjects.EVAL_MAX_DELIVERIES_ADVISORY, subjects.DEAD_LETTERS_CONSUMER,
                on_dead_letter, stop),
        beat(nc, stop),
    )
    await responder.close()
    await planner.stop()
    await nc.close()  # every fetched message was handled above; drain would wait on the pull subscriptions


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
